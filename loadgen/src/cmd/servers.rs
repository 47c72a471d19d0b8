//! `echo-server` and `delay-proxy`: start the server, print where it
//! listens (first line of stdout, for scripts and tests), run until killed
//! or `--exit-after`.

use std::io::Write as _;
use std::process::ExitCode;

use super::{secs, CmdError};
use crate::cli::{DelayProxyArgs, EchoServerArgs};
use crate::rt::ThreadPlan;
use crate::server::echo::{EchoOptions, Faults};
use crate::server::{echo, proxy, tls};

pub fn echo_server(a: &EchoServerArgs) -> Result<ExitCode, CmdError> {
    let tls = if a.tls {
        let files = a.cert.as_deref().zip(a.key.as_deref());
        Some(
            tls::server_tls(files, a.cert_out.as_deref())
                .map_err(crate::server::ServerError::from)?,
        )
    } else {
        None
    };
    let opts = EchoOptions {
        delay: secs(a.delay_ms / 1000.0, "--delay-ms")?,
        faults: Faults {
            corrupt_every: a.corrupt_every,
            drop_every: a.drop_every,
            duplicate_every: a.duplicate_every,
        },
        ping_every: a.ping_every,
        ..EchoOptions::default()
    };
    let exit_after = a.exit_after.map(|s| secs(s, "--exit-after")).transpose()?;
    let plan = ThreadPlan::resolve(a.threads, usize::MAX, a.pin.clone());
    let description = tls.as_ref().map(|t| t.description.clone());
    let running = echo::start(
        a.listen,
        &plan,
        tls.map(|t| t.config),
        opts.clone(),
        exit_after,
    )?;
    let scheme = if description.is_some() { "wss" } else { "ws" };
    println!("listening on {scheme}://{}/", running.addr);
    let mut notes = vec![format!("{} thread(s)", plan.threads)];
    if let Some(d) = description {
        notes.push(d);
    }
    if !opts.delay.is_zero() {
        notes.push(format!("answers after {} ms", a.delay_ms));
    }
    let f = opts.faults;
    for (what, n) in [
        ("corrupting", f.corrupt_every),
        ("dropping", f.drop_every),
        ("duplicating", f.duplicate_every),
    ] {
        if n > 0 {
            notes.push(format!("FAULT INJECTION: {what} every {n}th message"));
        }
    }
    if opts.ping_every > 0 {
        notes.push(format!(
            "pinging the client every {} messages",
            opts.ping_every
        ));
    }
    println!("echo-server: {}", notes.join("; "));
    let _ = std::io::stdout().flush();
    running.wait().map_err(crate::server::ServerError::from)?;
    Ok(ExitCode::SUCCESS)
}

pub fn delay_proxy(a: &DelayProxyArgs) -> Result<ExitCode, CmdError> {
    let one_way = secs(a.delay_ms / 1000.0, "--delay-ms")?;
    let exit_after = a.exit_after.map(|s| secs(s, "--exit-after")).transpose()?;
    let plan = ThreadPlan::resolve(a.threads, usize::MAX, a.pin.clone());
    let running = proxy::start(a.listen, a.to, one_way, &plan, exit_after)?;
    println!("listening on {}", running.addr);
    println!(
        "delay-proxy: forwarding to {}, +{} ms each way (+{} ms per round trip), {} thread(s)",
        a.to,
        a.delay_ms,
        2.0 * a.delay_ms,
        plan.threads
    );
    let _ = std::io::stdout().flush();
    running.wait().map_err(crate::server::ServerError::from)?;
    Ok(ExitCode::SUCCESS)
}
