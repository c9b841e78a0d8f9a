//! What an admin sees at the command line: help, versions, clear errors
//! with the right exit codes.

mod common;

use std::process::Command;

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

#[test]
fn help_documents_every_flag_the_parser_takes() {
    let (code, out, _) = pepwrt(&["--help"]);
    assert_eq!(code, 0);
    let src = include_str!("../src/config.rs");
    // Every long flag the parser matches appears in the help text.
    for piece in src.split("(_, \"").skip(1) {
        let flag = &piece[..piece.find('"').expect("quote")];
        assert!(
            out.contains(&format!("--{flag}")),
            "--{flag} is not in --help"
        );
    }
    for leg_flag in ["cc", "nodelay", "quickack", "sndbuf", "rcvbuf", "mss"] {
        assert!(
            out.contains(&format!("--server-{leg_flag}")),
            "--server-{leg_flag}"
        );
        assert!(
            out.contains(&format!("--client-{leg_flag}")),
            "--client-{leg_flag}"
        );
    }
    let (code, out, _) = pepwrt(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("pepwrt ", env!("CARGO_PKG_VERSION")))
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
    assert!(err.contains("pepwrt is not running"), "{err}");
}

#[test]
fn port_in_use_and_missing_congestion_control_are_clear_errors() {
    let mut tb = Testbed::new();
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
    assert!(
        out.2.contains("--server-cc nosuchcc") && out.2.contains("this kernel offers"),
        "{}",
        out.2
    );
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
    let tb = Testbed::new();
    let (code, out, err) = tb_run(&tb, &["check", "--server-cc", "cubic"]);
    assert_eq!(code, 0, "{out}{err}");
    for piece in [
        "congestion control",
        "NFQUEUE 3135 can be bound",
        "transparent listener on port 3135",
    ] {
        assert!(out.contains(&format!("ok      {piece}")), "{out}");
    }
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
