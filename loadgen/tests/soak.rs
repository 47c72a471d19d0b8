//! `soak` end to end with the real relay (the ws-relay-core built next to
//! loadgen): a short run of every variant with reloads, target restarts
//! and RST'd clients must pass, and its JSON must show each of those
//! events really happened (a soak that never restarted a target proves
//! nothing about restarts). The long run is for docs/development.md "Soak test", not here.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{at, relay_bin, run, u64_at};

#[test]
fn a_short_soak_of_every_variant_passes_with_every_event_seen() {
    let Some(relay) = relay_bin() else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED a_short_soak_of_every_variant_passes_with_every_event_seen: no ws-relay-core \
             next to {} (set LOADGEN_RELAY_BIN)",
            common::bin().display()
        );
        return;
    };
    let json = std::env::temp_dir().join(format!("loadgen-soak-{}.json", std::process::id()));
    let relay = relay.to_string_lossy().into_owned();
    let json_arg = json.to_string_lossy().into_owned();
    #[rustfmt::skip]
    let args = [
        "soak", "--relay-bin", &relay, "--json", &json_arg,
        "-d", "6", "-c", "120", "--ramp", "1", "--rate", "10",
        "--reloads", "3", "--target-restarts", "2", "--targets", "2",
        "--rst-every", "6", "--lifetime", "3", "--sample-ms", "250",
        "--variants", "plain-splice,plain-copy,tls-copy,tls-splice,plain-ring,tls-ring",
    ];
    let f = run(&args, Duration::from_secs(240));
    println!("{}\n{}", f.stdout, f.stderr);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("soak: PASS (6 variants)"), "{}", f.stdout);

    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let reports = reports.as_array().expect("an array of variants");
    assert_eq!(reports.len(), 6);
    for r in reports {
        let name = at(r, &["variant"]).as_str().unwrap().to_string();
        let n = |path: &[&str]| u64_at(r, path);
        assert_eq!(n(&["reloads"]), 3, "{name}");
        assert_eq!(n(&["target_restarts"]), 2, "{name}");
        assert!(
            n(&["clients", "ended_by_restart"]) > 0,
            "{name}: no session saw a restart"
        );
        assert!(
            n(&["clients", "rst"]) > 0,
            "{name}: no client vanished by RST"
        );
        assert!(n(&["clients", "ended_clean"]) > 100, "{name}");
        assert!(
            n(&["clients", "removed_user_sessions"]) > 0,
            "{name}: no session outlived its user's removal"
        );
        assert!(n(&["clients", "surviving", "received"]) > 1000, "{name}");
        for bad in ["lost", "duplicated", "reordered", "corrupted"] {
            assert_eq!(n(&["clients", "surviving", bad]), 0, "{name}: {bad}");
        }
        for kind in ["sockets", "other"] {
            assert_eq!(
                n(&["fds_end", kind]),
                n(&["fds_start", kind]),
                "{name}: {kind}"
            );
        }
        // The documented close for a vanished target, by forward mode. In
        // copy mode a killed target that held unread bytes resets the
        // connection (its kernel does), and the relay passes the reset on.
        let closes = at(r, &["clients", "restart_closes"]).as_object().unwrap();
        // Ring mode sees frames as copy does.
        let copy = at(r, &["tls"]).as_bool().unwrap() || !name.ends_with("splice");
        if copy {
            assert!(closes.contains_key("close 1014"), "{name}: {closes:?}");
            assert!(
                closes
                    .keys()
                    .all(|k| k == "close 1014" || k.starts_with("reset")),
                "{name}: {closes:?}"
            );
        } else {
            assert!(
                closes.keys().all(|k| k == "eof" || k.starts_with("reset")),
                "{name}: {closes:?}"
            );
        }
    }
}
