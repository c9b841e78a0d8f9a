//! luci-app-pepwrt: the LuCI pages and their rpcd backend.
//!
//! - the package's JSON, views, plugins and translation template agree
//!   (Node.js: `tests/luci/tool.js static`, `node --check`);
//! - the rpcd shell plugin answers `list` and `call getStatus`, steps aside
//!   for the ucode flavour, and reports a stopped daemon;
//! - both plugins report a live pepwrt, with real connections split in
//!   network namespaces (needs root, like tests/relay.rs);
//! - both views load and render in headless Chromium inside a harness of
//!   stand-ins for LuCI's modules (tests/luci/harness.js), fed sample JSON
//!   and a sample UCI config; the pages' DOM is checked and screenshots are
//!   taken. Where real LuCI's behaviour can trip a view (Save removing
//!   hidden options, rpc error statuses, poll.add running at once, ACL
//!   checks for a user who is not root), the stand-in behaves the same.
//!
//! CI needs the Debian packages `nodejs` and `chromium`. A missing tool
//! fails the test with the package to install; nothing is skipped quietly.
//! The run under a real ucode interpreter is `#[ignore]`d (Debian has no
//! ucode package): `UCODE=/path/to/ucode cargo test --test luci -- --ignored`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn pkg(rel: &str) -> PathBuf {
    repo().join("openwrt/luci-app-pepwrt").join(rel)
}

fn tool() -> PathBuf {
    repo().join("tests/luci/tool.js")
}

const SHELL_PLUGIN: &str = "root/usr/libexec/rpcd/luci.pepwrt";
const UCODE_PLUGIN: &str = "root/usr/share/rpcd/ucode/luci.pepwrt";

/// The path of `name` on PATH, if any.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn node() -> PathBuf {
    which("node")
        .or_else(|| which("nodejs"))
        .expect("Node.js is needed for the LuCI tests: apt-get install -y nodejs")
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    which("chromium")
        .or_else(|| which("chromium-browser"))
        .expect("Chromium is needed to render the LuCI pages: apt-get install -y chromium")
}

/// Runs a command to completion within `limit`, killing it after that.
fn run_limited(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout"),
        stderr: err_reader.join().expect("stderr"),
    }
}

/// Runs a command and returns its stdout; fails the test on failure.
fn ok(cmd: &mut Command) -> String {
    let out = run_limited(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `node tool.js ARGS...`
fn tool_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(node());
    c.arg(tool()).args(args);
    c
}

/// Checks a getStatus answer with tool.js: `expect` is a JSON object of
/// dotted paths and wanted values (see tool.js `answer`).
fn check_answer(answer: &str, expect: &str) {
    ok(&mut tool_cmd(&["answer", answer.trim(), expect]));
}

#[test]
fn package_files_parse_and_agree() {
    let views = pkg("htdocs/luci-static/resources/view/pepwrt");
    for js in ["config.js", "status.js"] {
        ok(Command::new(node()).arg("--check").arg(views.join(js)));
    }
    for js in ["harness.js", "tool.js"] {
        ok(Command::new(node())
            .arg("--check")
            .arg(repo().join("tests/luci").join(js)));
    }
    // Menu and ACL JSON, view paths, ubus names, file grants, .pot, options.
    let out = ok(&mut tool_cmd(&["static"]));
    assert!(out.contains("static checks passed"), "{out}");
    // The ucode plugin is written in the part of ucode that is also
    // JavaScript: wrapped as a function body it must parse.
    let src = std::fs::read_to_string(pkg(UCODE_PLUGIN)).expect("ucode plugin");
    let dir = TempDir::new("parse");
    let wrapped = dir.0.join("ucode-as-js.js");
    std::fs::write(&wrapped, format!("(function () {{\n{src}\n}});\n")).expect("write");
    ok(Command::new(node()).arg("--check").arg(&wrapped));
    // The shell plugin parses as POSIX sh.
    ok(Command::new("sh").arg("-n").arg(pkg(SHELL_PLUGIN)));
}

#[test]
fn shell_plugin_lists_its_method_unless_the_ucode_flavour_serves_it() {
    let dir = TempDir::new("list");
    let module = dir.0.join("ucode.so");
    let plugin = dir.0.join("luci.pepwrt");
    let list = |with_module: bool, with_plugin: bool| {
        let _ = std::fs::remove_file(&module);
        let _ = std::fs::remove_file(&plugin);
        if with_module {
            std::fs::write(&module, "").expect("module");
        }
        if with_plugin {
            std::fs::write(&plugin, "").expect("plugin");
        }
        ok(Command::new("sh")
            .arg(pkg(SHELL_PLUGIN))
            .arg("list")
            .env("PEPWRT_RPCD_UCODE", &module)
            .env("PEPWRT_UCODE_PLUGIN", &plugin))
        .trim()
        .to_string()
    };
    // Older releases: rpcd has no ucode support, the shell plugin serves.
    assert_eq!(list(false, false), r#"{"getStatus":{}}"#);
    assert_eq!(list(false, true), r#"{"getStatus":{}}"#);
    assert_eq!(list(true, false), r#"{"getStatus":{}}"#);
    // 22.03+: both installed; an empty method list makes rpcd skip this one.
    assert_eq!(list(true, true), "{}");
    // An unknown method fails.
    let out = run_limited(
        Command::new("sh")
            .arg(pkg(SHELL_PLUGIN))
            .args(["call", "nope"]),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
}

#[test]
fn plugins_report_a_stopped_daemon() {
    let dir = TempDir::new("stopped");
    let sock = dir.0.join("no \"such\" 'socket'");
    let sock = sock.to_str().expect("utf-8");
    let want = r#"{"running":false,"error":"~not running"}"#;
    // Shell flavour.
    let out = ok(Command::new("sh")
        .arg(pkg(SHELL_PLUGIN))
        .args(["call", "getStatus"])
        .env("PEPWRT_BIN", PEPWRT)
        .env("PEPWRT_CONTROL", sock));
    check_answer(&out, want);
    // ucode flavour, run by Node.js with ucode's builtins as stand-ins.
    let out = ok(tool_cmd(&["ucode-node"])
        .arg(pkg(UCODE_PLUGIN))
        .env("PEPWRT_BIN", PEPWRT)
        .env("PEPWRT_CONTROL", sock));
    check_answer(&out, want);
    // No binary at all.
    let missing = dir.0.join("pepwrt");
    let want = r#"{"running":false,"error":"~not installed"}"#;
    let out = ok(Command::new("sh")
        .arg(pkg(SHELL_PLUGIN))
        .args(["call", "getStatus"])
        .env("PEPWRT_BIN", &missing));
    check_answer(&out, want);
    let out = ok(tool_cmd(&["ucode-node"])
        .arg(pkg(UCODE_PLUGIN))
        .env("PEPWRT_BIN", &missing));
    check_answer(&out, want);
    // Installed but not running: why, for the status page's hint.
    let uci = dir.0.join("uci");
    std::fs::write(&uci, "#!/bin/sh\necho 1\n").expect("uci stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&uci, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let refused = dir.0.join("pepwrt.refused");
    let line = "bad configuration in /etc/config/pepwrt, not starting: --rtt needs --uplink or --downlink \"x\"";
    let answers = |enabled: &Path| {
        let shell = ok(Command::new("sh")
            .arg(pkg(SHELL_PLUGIN))
            .args(["call", "getStatus"])
            .env("PEPWRT_BIN", PEPWRT)
            .env("PEPWRT_CONTROL", sock)
            .env("PEPWRT_UCI", enabled)
            .env("PEPWRT_REFUSED", &refused));
        let ucode = ok(tool_cmd(&["ucode-node"])
            .arg(pkg(UCODE_PLUGIN))
            .env("PEPWRT_BIN", PEPWRT)
            .env("PEPWRT_CONTROL", sock)
            .env("PEPWRT_UCI", enabled)
            .env("PEPWRT_REFUSED", &refused));
        [shell, ucode]
    };
    std::fs::write(&refused, format!("{line}\n")).expect("refused");
    let want = json_strings(&[("reason", "refused"), ("refused", line)]);
    for out in answers(&uci) {
        check_answer(&out, &want);
    }
    // Not enabled (uci says nothing): disabled, whatever the last start said.
    for out in answers(&dir.0.join("no-uci")) {
        check_answer(&out, r#"{"running":false,"reason":"disabled"}"#);
    }
    std::fs::remove_file(&refused).expect("rm");
    for out in answers(&uci) {
        check_answer(&out, r#"{"running":false,"reason":"stopped"}"#);
    }
}

/// A JSON object of string members, for check_answer.
fn json_strings(members: &[(&str, &str)]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Opens `n` connections from the client namespace to a server that reads
/// `up` bytes and answers `down` bytes on each, keeping them all open; the
/// returned closure closes them.
fn live_connections(
    tb: &Testbed,
    n: usize,
    up: usize,
    down: usize,
) -> (Vec<TcpStream>, thread::JoinHandle<Vec<TcpStream>>) {
    let listener = tb.server_listener("198.18.1.2:7100");
    let server = thread::spawn(move || {
        let mut kept = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; up];
            s.read_exact(&mut buf).expect("request");
            s.write_all(&payload(7, down)).expect("answer");
            kept.push(s);
        }
        kept
    });
    let target: SocketAddr = "198.18.1.2:7100".parse().expect("addr");
    let clients = tb
        .in_client(move || {
            (0..n)
                .map(|i| {
                    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(10))
                        .expect("connect");
                    s.write_all(&payload(i as u64, up)).expect("send");
                    let mut buf = vec![0u8; down];
                    s.set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("timeout");
                    s.read_exact(&mut buf).expect("answer");
                    s
                })
                .collect::<Vec<_>>()
        })
        .join()
        .expect("clients");
    (clients, server)
}

/// `ip netns exec ROUTER env PEPWRT_BIN=... PEPWRT_CONTROL=...`, to which
/// the caller appends the plugin command.
fn plugin_env(tb: &Testbed, control: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &tb.router, "env"])
        .arg(format!("PEPWRT_BIN={PEPWRT}"))
        .arg(format!("PEPWRT_CONTROL={control}"));
    c
}

/// Completes a ucode command line (`cmd` already names the interpreter):
/// the module path from UCODE_LIB, then tests/luci/call_plugin.uc, which
/// loads the plugin as rpcd does and prints getStatus's answer.
fn ucode_call(cmd: &mut Command) -> &mut Command {
    if let Some(lib) = std::env::var_os("UCODE_LIB") {
        cmd.arg("-L").arg(lib);
    }
    cmd.arg(repo().join("tests/luci/call_plugin.uc"))
        .arg(pkg(UCODE_PLUGIN))
}

#[test]
fn plugins_report_a_live_pepwrt_with_split_connections() {
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&["--max-conns", "8", "--buffer", "16k"]);
    let (clients, server) = live_connections(&tb, 2, 3000, 50_000);
    let control = tb.control.to_string_lossy().to_string();
    let plugin = pkg(SHELL_PLUGIN);
    let shell_status = || {
        ok(plugin_env(&tb, &control)
            .arg("sh")
            .arg(&plugin)
            .args(["call", "getStatus"]))
    };
    // The daemon counts bytes as it relays them; wait until both legs are done.
    let mut last = String::new();
    let settled = eventually(Duration::from_secs(10), || {
        last = shell_status();
        json_number(&last, "bytes_down") == Some(100_000)
            && json_number(&last, "bytes_up") == Some(6000)
    });
    assert!(settled, "counters did not settle: {last}");
    let want = r#"{"running":true,"version":"~.","max_conns":8,"buffer_bytes":16384,
        "counters.active":2,"counters.split":2,"counters.total":2,"counters.passed":0,
        "counters.bytes_up":6000,"counters.bytes_down":100000,"snoop":null,
        "connections.length":2,"connections.0.client":"~198.18.0.2:","connections.0.server":"198.18.1.2:7100",
        "connections.0.state":"relay","connections.0.bytes_up":3000,"connections.0.bytes_down":50000,
        "connections.1.server":"198.18.1.2:7100"}"#;
    check_answer(&last, want);
    // The ucode flavour (under Node.js) gives the same answer.
    let out = ok(plugin_env(&tb, &control)
        .arg(node())
        .arg(tool())
        .arg("ucode-node")
        .arg(pkg(UCODE_PLUGIN)));
    check_answer(&out, want);
    // And under a real ucode when one is given (see ucode_plugin_runs_under_ucode).
    if let Some(ucode) = std::env::var_os("UCODE") {
        let out = ok(ucode_call(plugin_env(&tb, &control).arg(ucode)));
        check_answer(&out, want);
    }
    for c in &clients {
        let _ = c.shutdown(Shutdown::Both);
    }
    drop(clients);
    drop(server.join().expect("server"));
    // Both closed: no live connections remain in the answer.
    let closed = eventually(Duration::from_secs(10), || {
        json_number(&shell_status(), "active") == Some(0)
    });
    assert!(closed, "connections still listed: {}", shell_status());
    check_answer(
        &shell_status(),
        r#"{"running":true,"counters.active":0,"connections.length":0,"counters.total":2}"#,
    );
}

#[test]
#[ignore = "needs a ucode interpreter, which Debian does not package: UCODE=/path/to/ucode cargo test --test luci -- --ignored"]
fn ucode_plugin_runs_under_ucode() {
    let ucode = std::env::var_os("UCODE")
        .map(PathBuf::from)
        .or_else(|| which("ucode"))
        .expect("set UCODE=/path/to/ucode");
    let dir = TempDir::new("ucode");
    let out = ok(ucode_call(
        Command::new(&ucode)
            .env("PEPWRT_BIN", PEPWRT)
            .env("PEPWRT_CONTROL", dir.0.join("none")),
    ));
    check_answer(&out, r#"{"running":false,"error":"~not running"}"#);
}

/// Renders one harness scenario in headless Chromium and checks the DOM.
fn render(dir: &Path, scenario: &str, screenshot: Option<(&Path, &str)>) {
    render_with(dir, scenario, screenshot, &[]);
}

/// `render`, with environment variables for tool.js (page and verify).
fn render_with(
    dir: &Path,
    scenario: &str,
    screenshot: Option<(&Path, &str)>,
    env: &[(&str, &Path)],
) {
    let tool_env = |args: &[&str]| {
        let mut c = tool_cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    };
    let page = dir.join(format!("{scenario}.html"));
    ok(tool_env(&["page", scenario]).arg(&page));
    let url = format!("file://{}", page.display());
    let chromium_cmd = |profile: &str| {
        let mut c = Command::new(chromium());
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ]);
        // A new, empty profile for every run.
        let profile = dir.join(profile);
        std::fs::create_dir_all(&profile).expect("profile");
        c.arg(format!("--user-data-dir={}", profile.display()));
        c
    };
    let dom = ok(chromium_cmd(&format!("{scenario}-dom"))
        .arg("--dump-dom")
        .arg(&url));
    let dom_file = dir.join(format!("{scenario}.dom.html"));
    std::fs::write(&dom_file, dom).expect("dom");
    let out = ok(tool_env(&["verify", scenario]).arg(&dom_file));
    assert!(out.contains("verified"), "{out}");
    if let Some((png, size)) = screenshot {
        ok(chromium_cmd(&format!("{scenario}-png"))
            .arg(format!("--window-size={size}"))
            .arg(format!("--screenshot={}", png.display()))
            .arg(&url));
        let head = std::fs::read(png).expect("screenshot written");
        assert!(
            head.starts_with(b"\x89PNG") && head.len() > 20_000,
            "{} is not a real screenshot",
            png.display()
        );
    }
}

#[test]
fn views_render_in_headless_chromium() {
    let dir = TempDir::new("chromium");
    // The screenshots of the current app, taken on every run over the
    // committed ones: git shows them changed when the pages look different.
    let shots = repo().join("tests/luci/screenshots");
    render(
        &dir.0,
        "config",
        Some((&shots.join("config.png"), "1200,2500")),
    );
    render(
        &dir.0,
        "status",
        Some((&shots.join("status.png"), "1200,1550")),
    );
    render(
        &dir.0,
        "status-refused",
        Some((&shots.join("status-refused.png"), "1200,400")),
    );
    for scenario in [
        "status-stopped",
        "status-notinstalled",
        "status-disabled",
        "status-nobackend",
        "status-two-samples",
        "status-tunnel",
    ] {
        render(&dir.0, scenario, None);
    }
}

/// The settings form and `pepwrt check` agree on every combination in
/// tests/luci/fixtures/combos.json: each is run through the daemon's own
/// check (refused: exit 2, bad configuration) and typed into the form on
/// top of the sample config (refused: any shown field invalid). The sample
/// config enables Snoop toward wlan0, so the daemon gets `--snoop wlan0`.
#[test]
fn form_refuses_what_pepwrt_check_refuses() {
    let fixture = repo().join("tests/luci/fixtures/combos.json");
    let combos = ok(tool_cmd(&["combos-flags"]).arg(&fixture));
    let mut verdicts = Vec::new();
    for line in combos.lines() {
        // Each line: the combination's index, then its flags, tab-separated.
        let mut words = line.split('\t');
        let index = words.next().expect("index");
        let out = run_limited(
            Command::new(PEPWRT)
                .arg("check")
                .args(["--snoop", "wlan0"])
                .args(words.filter(|w| !w.is_empty())),
            Duration::from_secs(30),
        );
        let refused = out.status.code() == Some(2);
        let text = String::from_utf8_lossy(if out.stderr.is_empty() {
            &out.stdout
        } else {
            &out.stderr
        })
        .trim()
        .replace(['\t', '\n'], " ");
        verdicts.push(format!("{index}\t{refused}\t{text}"));
    }
    let dir = TempDir::new("combos");
    let verdict_file = dir.0.join("verdicts.tsv");
    std::fs::write(&verdict_file, verdicts.join("\n")).expect("verdicts");
    let merged = dir.0.join("combos.json");
    ok(tool_cmd(&["combos-merge"])
        .arg(&fixture)
        .arg(&verdict_file)
        .arg(&merged));
    render_with(&dir.0, "config-combos", None, &[("PEPWRT_COMBOS", &merged)]);
}

/// What real LuCI does and the stand-in now does too: Save drops hidden
/// options unless retained, a plugin's error status only rejects with
/// `reject: true`, `poll.add` runs at once, and a user who is not root
/// gets only the ubus calls the ACL grants (the interface picker's too).
#[test]
fn views_behave_as_under_real_luci() {
    let dir = TempDir::new("chromium-real");
    render(&dir.0, "config-save", None);
    render(&dir.0, "config-save-2102", None);
    render(&dir.0, "config-save-invalid", None);
    render(&dir.0, "config-preset-geo", None);
    render(&dir.0, "config-preset-leo", None);
    render(&dir.0, "status-error", None);
}
