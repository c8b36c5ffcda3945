//! A `stdio` console port on a real terminal, driven as a person would through tmux: the
//! terminal goes raw while the VM runs (keys reach the guest as typed and come back through
//! its echo), the window size reaches the guest, `Ctrl-A x` ends the run with status 0, and
//! the terminal is as it was afterwards.
//!
//! Needs `/dev/kvm` and tmux; without either the test says so on stderr and passes without
//! running (.ci/run installs tmux).

mod common;

use common::{kvm_present, perimeter, text, tmp_dir};
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().expect("tmux runs");
    assert!(o.status.success(), "tmux {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Waits until `what` holds of the pane's text (up to 60 s); returns the text.
fn until(session: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if f(&screen) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; the pane shows:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The terminal's settings, one word each (`-icanon`, `opost`, ...).
fn stty(tty: &str) -> Vec<String> {
    let o = Command::new("stty")
        .args(["-F", tty, "-a"])
        .output()
        .unwrap();
    text(&o.stdout)
        .split([' ', '\n', ';'])
        .map(String::from)
        .collect()
}

/// Removes the session even when the test fails.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

#[test]
fn a_terminal_is_raw_while_the_vm_runs_ctrl_a_x_quits_and_it_comes_back_as_it_was() {
    let test = "a_terminal_is_raw_while_the_vm_runs_ctrl_a_x_quits_and_it_comes_back_as_it_was";
    if !kvm_present(test) {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("\n*** SKIPPED {test}: tmux is missing ***\n");
        return;
    }
    let dir = tmp_dir("terminal");
    let ctl = dir.join("ctl.sock");
    let status = dir.join("status");
    let session = Session(format!("perimeter-test-{}", std::process::id()));
    let s = session.0.as_str();
    let run = format!(
        "{} run --workload echo --timeout 120 --control {} --port name=con,backend=stdio,console; \
         echo $? > {}; echo RUN-ENDED; sleep 60",
        env!("CARGO_BIN_EXE_perimeter"),
        ctl.display(),
        status.display()
    );
    tmux(&["new-session", "-d", "-s", s, "-x", "100", "-y", "30", &run]);
    let tty = tmux(&["display-message", "-p", "-t", s, "#{pane_tty}"]);
    let tty = tty.trim();
    until(s, "the guest's echo opens its port", |t| {
        t.contains("port(s) open")
    });
    let raw = stty(tty);
    let has = |set: &[String], w: &str| set.iter().any(|x| x == w);
    assert!(
        has(&raw, "-icanon") && has(&raw, "-echo") && has(&raw, "-isig"),
        "{raw:?}"
    );
    assert!(has(&raw, "opost"), "output still post-processed: {raw:?}");

    // Typed without Enter: only the guest's echo can show it (the terminal echoes nothing).
    tmux(&["send-keys", "-t", s, "-l", "hello-raw"]);
    until(s, "the guest echoes what was typed", |t| {
        t.contains("hello-raw")
    });
    // Ctrl-A Ctrl-A sends one Ctrl-A, which the guest echoes back as it is.
    tmux(&["send-keys", "-t", s, "C-a", "C-a"]);

    // A new window size reaches the guest.
    tmux(&["resize-window", "-t", s, "-x", "90", "-y", "25"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = perimeter(&["ctl", ctl.to_str().unwrap(), "ports"]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if doc["ports"][0]["size"] == serde_json::json!([90, 25]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "size never reached the guest: {doc}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    tmux(&["send-keys", "-t", s, "C-a", "x"]);
    until(s, "Ctrl-A x ends the run", |t| t.contains("RUN-ENDED"));
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0");
    let screen = tmux(&["capture-pane", "-p", "-t", s]);
    assert!(
        screen.contains("stopped from the terminal (Ctrl-A x)"),
        "{screen}"
    );
    let after = stty(tty);
    assert!(
        has(&after, "icanon") && has(&after, "echo") && has(&after, "isig"),
        "{after:?}"
    );
    drop(session);
    std::fs::remove_dir_all(&dir).unwrap();
}
