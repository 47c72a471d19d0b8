//! The HTTP/1.1 front door: request-head parsing with limits, and the few
//! plain responses the relay gives before (or instead of) an upgrade.

pub mod head;
pub mod response;
pub mod url;
