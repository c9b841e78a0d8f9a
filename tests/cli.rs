//! What an admin sees at the command line: help, versions, clear errors
//! with the right exit codes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn pepwrt(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PEPWRT)
        .args(args)
        .output()
        .expect("run pepwrt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The value placeholders the help uses after a flag.
const PLACEHOLDERS: &[&str] = &[
    "NUM", "N", "SECS", "SEGMENTS", "PORT", "BIT", "IF|CIDR", "BYTES", "LEVEL", "PATH", "NAME",
    "RATE", "DURATION", "IF",
];

/// A value of the kind a help placeholder names (`--queue NUM`).
fn sample_value(placeholder: &str) -> &'static str {
    match placeholder {
        "NUM" | "N" | "SECS" | "SEGMENTS" => "30",
        "PORT" => "8080",
        "BIT" => "0x10000",
        "IF|CIDR" => "br-lan",
        "IF" => "wg0",
        "BYTES" => "16384",
        "LEVEL" => "info",
        "PATH" => "/tmp/pepwrt-cli-test.sock",
        "NAME" => "cubic",
        "RATE" => "10mbit",
        "DURATION" => "600ms",
        // A list of choices (client|router): its first.
        other => other
            .split('|')
            .next()
            .map_or("", |first| Box::leak(first.to_string().into_boxed_str())),
    }
}

/// Every `--flag` the help text names, with its placeholder if it takes
/// a value.
fn documented_flags(help: &str) -> Vec<(String, Option<String>)> {
    let words: Vec<&str> = help.split_whitespace().collect();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_start_matches('(').trim_end_matches([',', ')', ';']);
        let Some(name) = w.strip_prefix("--") else {
            continue;
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            continue;
        }
        // A placeholder is upper case (NUM, IF|CIDR) or a list of
        // choices (client|router); prose after a flag is neither.
        let next = words
            .get(i + 1)
            .copied()
            .unwrap_or("")
            .trim_end_matches(',');
        let choice = |b: u8| b.is_ascii_lowercase() || b == b'|';
        let known = PLACEHOLDERS.contains(&next);
        let placeholder =
            (known || next.contains('|') && next.bytes().all(choice)).then(|| next.to_string());
        match flags.iter_mut().find(|(f, _)| f == name) {
            // Prose mentions a flag too: keep the mention that shows a value.
            Some((_, p)) => {
                if p.is_none() {
                    *p = placeholder;
                }
            }
            None => flags.push((name.to_string(), placeholder)),
        }
    }
    flags
}

/// The link figures come as a set: the ones `flag` needs beside it.
fn link_companions(flag: &str) -> &'static [&'static str] {
    match flag {
        "rtt" | "link-leg" => &["--uplink", "10mbit", "--rtt", "600ms"],
        "uplink" | "downlink" => &["--rtt", "600ms"],
        _ => &[],
    }
}

/// Every option a subcommand's help page names is one that subcommand
/// takes: `pepwrt SUB --flag VALUE --help` prints the page (the option
/// and its value were checked) instead of refusing it.
#[test]
fn every_flag_in_each_help_page_is_accepted_by_its_subcommand() {
    let (code, overview, _) = pepwrt(&["--help"]);
    assert_eq!(code, 0);
    for synopsis in [
        "pepwrt [run] ",
        "pepwrt check ",
        "pepwrt rules ",
        "pepwrt status ",
    ] {
        assert!(overview.contains(synopsis), "{synopsis}");
    }
    let mut run_flags = Vec::new();
    for sub in ["run", "check", "rules", "status"] {
        let (code, page, err) = pepwrt(&[sub, "--help"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!((code, page.clone()), {
            let (c, p, _) = pepwrt(&["help", sub]);
            (c, p)
        });
        assert!(page.starts_with(&format!("pepwrt {sub} - ")), "{page}");
        for section in ["SYNOPSIS:", "DESCRIPTION:", "OPTIONS", "EXIT STATUS:"] {
            assert!(page.contains(section), "{sub} --help has no {section}");
        }
        // Examples combine options; each is checked on its own.
        let options = page.split("EXAMPLES:").next().unwrap_or("");
        let flags = documented_flags(options);
        assert!(!flags.is_empty(), "{sub}");
        for (flag, placeholder) in &flags {
            let dashed = format!("--{flag}");
            let mut args = vec![sub];
            args.extend_from_slice(link_companions(flag));
            args.push(&dashed);
            if let Some(p) = placeholder {
                args.push(sample_value(p));
            }
            args.push("--help");
            let (code, out, err) = pepwrt(&args);
            assert_eq!(
                (code, out.starts_with(&format!("pepwrt {sub} - "))),
                (0, true),
                "{args:?} (in '{sub} --help') was refused: {err}"
            );
        }
        if sub == "run" {
            run_flags = flags;
        }
    }
    // The run page names every option of the daemon...
    for must in [
        "queue",
        "server-cc",
        "client-sndbuf",
        "uplink",
        "rtt",
        "snoop-cache",
        "user",
    ] {
        assert!(
            run_flags.iter().any(|(f, _)| f == must),
            "--{must} not found in run --help"
        );
    }
    let (_, run_page, _) = pepwrt(&["run", "--help"]);
    for leg_flag in ["cc", "nodelay", "quickack", "sndbuf", "rcvbuf", "mss"] {
        for leg in ["server", "client"] {
            let flag = format!("--{leg}-{leg_flag}");
            assert!(run_page.contains(&flag), "{flag} is not in run --help");
        }
    }
    // ... and check and rules take them all but -f, as the init script
    // passes the same options to all three.
    for (flag, placeholder) in &run_flags {
        for sub in ["check", "rules"] {
            let dashed = format!("--{flag}");
            let mut args = vec![sub];
            args.extend_from_slice(link_companions(flag));
            args.push(&dashed);
            if let Some(p) = placeholder {
                args.push(sample_value(p));
            }
            args.push("--help");
            let (code, _, err) = pepwrt(&args);
            let run_only = flag == "foreground" || (flag == "control" && sub == "rules");
            assert_eq!(code, if run_only { 2 } else { 0 }, "{args:?}: {err}");
        }
    }
    let (code, out, _) = pepwrt(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("pepwrt ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn an_option_of_another_subcommand_is_refused_naming_its_owners() {
    for (args, needle) in [
        (
            &["run", "--json"][..],
            "--json is an option of status only, not of run",
        ),
        (
            &["run", "--delete", "-f"][..],
            "--delete is an option of rules only, not of run",
        ),
        (
            &["--part", "routing"][..],
            "--part is an option of rules only, not of run",
        ),
        (
            &["run", "--backend", "nft"][..],
            "--backend is an option of check and rules, not of run",
        ),
        (
            &["check", "--foreground"][..],
            "--foreground is an option of run only, not of check",
        ),
        (
            &["status", "--max-conns", "4"][..],
            "--max-conns is an option of run, check and rules, not of status",
        ),
    ] {
        let (code, out, err) = pepwrt(args);
        assert_eq!(code, 2, "{args:?} was accepted: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.matches("pepwrt:").count(), 1, "{err}");
        assert!(err.contains(" --help')"), "{args:?}: {err}");
    }
}

/// Buffers are allocated at start: a pool that cannot fit is refused
/// with the figures, before anything is bound (an allocation failure
/// would abort with exit 134, or wake the OOM killer on a router).
#[test]
fn a_pool_larger_than_the_memory_available_is_refused() {
    // 65000 x 2 x 16 MiB: about 2 TB.
    let huge = ["--max-conns", "65000", "--buffer", "16m"];
    let (code, _, err) = pepwrt(&[&["run", "-f"][..], &huge].concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the buffers need 2031 GiB (--max-conns 65000 x 2 x --buffer 16 MiB)"),
        "{err}"
    );
    assert!(
        err.contains("of memory available; lower --max-conns (at most"),
        "{err}"
    );
    assert_eq!(err.matches("pepwrt:").count(), 1, "{err}");
    let tb = testbed!();
    let (code, out, _) = tb_run(&tb, &[&["check"][..], &huge].concat());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("BAD     the buffers need 2031 GiB"), "{out}");
    let (code, out, _) = tb_run(&tb, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok      memory for the buffers: 8192 KiB of the"),
        "{out}"
    );
}

/// `check --backend` dry-runs each statement of the rules: here, where
/// the kernel's nft has no `queue`, nft is refused and names the package
/// while iptables' NFQUEUE passes.
#[test]
fn check_backend_probes_every_statement_the_rules_use() {
    let tb = testbed!();
    let queue_loads = {
        let ruleset = "table inet pepwrt_cli_probe { chain c { type filter hook prerouting priority raw; queue num 3135 bypass; }; }";
        Command::new("ip")
            .args(["netns", "exec", &tb.router, "nft", "-c", ruleset])
            .status()
            .expect("nft")
            .success()
    };
    let (code, out, _) = tb_run(&tb, &["check", "--backend", "nft"]);
    assert!(out.contains("ok      nft loads the rules' tproxy"), "{out}");
    if queue_loads {
        assert_eq!(code, 0, "{out}");
    } else {
        assert_eq!(code, 3, "{out}");
        assert!(
            out.contains("MISSING nft cannot load the rules' queue statement (Could not process rule: No such file or directory): install kmod-nft-queue"),
            "{out}"
        );
    }
    let (code, out, _) = tb_run(&tb, &["check", "--backend", "nft", "--quic", "reject"]);
    assert!(out.contains("ok      nft loads the rules' tproxy"), "{out}");
    assert!(out.contains(", fib, reject\n"), "{out}");
    assert_eq!(code, if queue_loads { 0 } else { 3 }, "{out}");
    let (code, out, _) = tb_run(
        &tb,
        &[
            "check",
            "--backend",
            "iptables",
            "--snoop",
            "lo",
            "--quic",
            "reject",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "ok      iptables loads the rules' NFQUEUE, TPROXY, socket, CONNMARK, CT, REJECT"
        ),
        "{out}"
    );
}

#[test]
fn link_settings_are_validated_and_shown() {
    for (args, needle) in [
        (
            &["--uplink", "10", "--rtt", "600ms"][..],
            "--uplink: '10' needs a unit",
        ),
        (
            &["--uplink", "10mbit", "--rtt", "600"][..],
            "--rtt: '600' needs a unit",
        ),
        (&["--uplink", "10mbit"][..], "need --rtt"),
    ] {
        let (code, _, err) = pepwrt(&[&["check"][..], args].concat());
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let mut tb = testbed!();
    // Autotuning reaches 4 MB at most: the 7.5 MB of two BDPs is fixed.
    tb.exec(&["sysctl", "-qw", "net.ipv4.tcp_wmem=4096 16384 4194304"]);
    let link = [
        "--uplink",
        "50mbit",
        "--downlink",
        "10mbit",
        "--rtt",
        "600ms",
    ];
    let (code, out, err) = tb_run(&tb, &[&["check"][..], &link].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok      link: RTT 600 ms, BDP 3750000 bytes sent over the link, initial window 2590 segments"),
        "{out}"
    );
    tb.start_pepwrt(&link);
    let json = tb.status();
    assert!(
        json.contains("\"link\":{\"uplink_bps\":50000000,\"downlink_bps\":10000000,\"rtt_ms\":600.000,\"leg\":\"server\",\"pacing_bps\":50000000,\"sndbuf_bytes\":7500000,\"rcvbuf_bytes\":null,\"route_initcwnd\":2590}"),
        "{json}"
    );
    let control = tb.control.to_string_lossy().to_string();
    let (code, text, _) = tb_run(&tb, &["status", "--control", &control]);
    assert_eq!(code, 0);
    assert!(
        text.contains("link:        uplink 50.000 Mbit/s, downlink 10.000 Mbit/s, RTT 600 ms; server leg over the link, paced at 50.000 Mbit/s, send buffer 7500000 bytes"),
        "{text}"
    );
}

#[test]
fn bad_flags_exit_2_and_name_the_problem() {
    for (args, needle) in [
        (
            &["--max-conns", "lots"][..],
            "--max-conns: 'lots' is not a number",
        ),
        (&["--bogus"][..], "unknown option --bogus"),
        (&["--buffer", "1"][..], "--buffer: 1 is out of range"),
        (
            &["rules", "--backend", "pf"][..],
            "--backend: 'pf' is not nft or iptables",
        ),
    ] {
        let (code, out, err) = pepwrt(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty());
        assert!(
            err.contains(needle) && err.contains("--help"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn status_without_a_daemon_says_it_is_not_running() {
    let (code, _, err) = pepwrt(&["status", "--control", "/nonexistent/pepwrt.sock"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "pepwrt: not running (no control socket at /nonexistent/pepwrt.sock)"
    );
}

#[test]
fn port_in_use_and_missing_congestion_control_are_clear_errors() {
    let mut tb = testbed!();
    tb.start_pepwrt(&[]);
    let control2 = format!("{}.2", tb.control.display());
    // A second daemon on the same control socket is refused...
    let out = tb_run(
        &tb,
        &["run", "-f", "--control", &tb.control.to_string_lossy()],
    );
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("another pepwrt is running"), "{}", out.2);
    // ... and with its own socket, the port is in use.
    let out = tb_run(
        &tb,
        &["run", "-f", "--control", &control2, "--queue", "4000"],
    );
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("port 3135 is in use"), "{}", out.2);
    let out = tb_run(
        &tb,
        &[
            "run",
            "-f",
            "--control",
            &control2,
            "--server-cc",
            "nosuchcc",
        ],
    );
    assert_eq!(out.0, 3, "{}", out.2);
    // The useful part first, not the errno's words.
    assert!(
        out.2.contains(
            "--server-cc nosuchcc: this kernel has no such congestion control; it offers"
        ),
        "{}",
        out.2
    );
    assert!(!out.2.contains("os error"), "{}", out.2);
    let out = tb_run(
        &tb,
        &["run", "-f", "--control", &control2, "--port", "4001"],
    );
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("NFQUEUE 3135 is already bound"), "{}", out.2);
    let _ = std::fs::remove_file(&control2);
}

#[test]
fn check_reports_each_kernel_piece() {
    let tb = testbed!();
    let (code, out, err) = tb_run(&tb, &["check", "--server-cc", "cubic"]);
    assert_eq!(code, 0, "{out}{err}");
    for piece in [
        "congestion control cubic",
        "NFQUEUE 3135 can be bound",
        "transparent listener on port 3135",
    ] {
        assert!(out.contains(&format!("ok      {piece}")), "{out}");
    }
    // What the system does not tell is left out, not guessed.
    assert!(!out.contains("assuming") && !out.contains("\n? "), "{out}");
    let (code, out, _) = tb_run(&tb, &["check", "--server-cc", "nosuchcc"]);
    assert_eq!(code, 3);
    assert!(out.contains("MISSING --server-cc nosuchcc"), "{out}");
    let (code, out, _) = tb_run(&tb, &["check", "--user", "no-such-user-here"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("BAD     --user: no user 'no-such-user-here'"),
        "{out}"
    );
    // A running pepwrt holds the queue and the port: busy, not missing.
    let mut tb = tb;
    tb.start_pepwrt(&[]);
    let (code, out, _) = tb_run(&tb, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BUSY    NFQUEUE 3135 is already bound"),
        "{out}"
    );
    assert!(
        out.contains("BUSY    transparent listener on port 3135: in use"),
        "{out}"
    );
}

/// Without -f and without a syslog daemon (none runs in the test's
/// namespace and /dev/log is absent here), errors reach stderr once, as
/// people read them, not as raw syslog lines.
#[test]
fn without_syslog_an_error_is_on_stderr_once_and_readable() {
    let mut tb = testbed!();
    tb.start_pepwrt(&[]);
    let control2 = format!("{}.3", tb.control.display());
    let out = tb_run(&tb, &["run", "--control", &control2, "--queue", "4002"]);
    assert_eq!(out.0, 1, "{}", out.2);
    if std::path::Path::new("/dev/log").exists() {
        eprintln!("note: /dev/log exists here; the error went to syslog too");
    }
    let lines: Vec<&str> = out
        .2
        .lines()
        .filter(|l| l.contains("port 3135 is in use"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.2);
    assert!(lines[0].starts_with("pepwrt: "), "{}", out.2);
    assert!(
        !out.2.contains("<27>") && !out.2.contains("pepwrt["),
        "{}",
        out.2
    );
    let _ = std::fs::remove_file(&control2);
}

/// An interface that does not exist is accepted (a modem's may come up
/// later) but named: a warning in check, at start and from rules.
#[test]
fn an_interface_that_does_not_exist_is_named_in_check_run_and_rules() {
    let mut tb = testbed!();
    let (code, out, _) = tb_run(&tb, &["check", "--intercept", "nosuchif0"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("WARN    interface nosuchif0 does not exist"),
        "{out}"
    );
    let (code, _, err) = tb_run(&tb, &["rules", "--intercept", "nosuchif0"]);
    assert_eq!(code, 0);
    assert!(err.contains("interface nosuchif0 does not exist"), "{err}");
    tb.start_pepwrt(&["--intercept", "nosuchif0"]);
    assert!(
        eventually(Duration::from_secs(5), || tb
            .log()
            .contains("interface nosuchif0 does not exist")),
        "{}",
        tb.log()
    );
}

fn tb_run(tb: &Testbed, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["netns", "exec", &tb.router, PEPWRT];
    full.extend_from_slice(args);
    let out = Command::new("ip")
        .args(&full)
        .output()
        .expect("ip netns exec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
