//! Numbers the project holds itself to, checked on every run so that they
//! still hold after the change that set them: a README a router admin can
//! read through, and source files a reader can hold in their head.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .count()
}

#[test]
fn readme_stays_short() {
    let n = lines(&repo().join("README.md"));
    assert!(
        n <= 250,
        "README.md has {n} lines (at most 250: details go to docs/)"
    );
}

#[test]
fn no_internal_work_rounds_in_user_documents() {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            assert!(
                !lower.contains("session ") && !lower.contains("rerun"),
                "{}:{}: history belongs in git, not here: {line}",
                f.display(),
                i + 1
            );
        }
    }
}

/// Every .rs file under a folder, with its path.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_loop_stays_mechanics() {
    let n = lines(&repo().join("src/event_loop.rs"));
    assert!(
        n <= 400,
        "src/event_loop.rs has {n} lines (at most 400: policy goes to its own module)"
    );
}

#[test]
fn no_source_file_over_600_lines() {
    let mut files = Vec::new();
    sources(&repo().join("src"), &mut files);
    for f in files {
        // Unit-test files hold cases, not code to read through.
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let n = lines(&f);
        assert!(
            n <= 600,
            "{} has {n} lines (at most 600: split it)",
            f.display()
        );
    }
}
