//! Driving perimeter on a real terminal, as a person would: a tmux session, keys sent, the
//! screen read, the terminal's settings checked with stty.

use super::{kvm_present, text};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs tmux with `args`; its stdout.
pub fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().expect("tmux runs");
    assert!(o.status.success(), "tmux {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Whether this machine can run a terminal test (KVM and tmux); says why not on stderr.
pub fn runnable(test: &str) -> bool {
    if !kvm_present(test) {
        return false;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("\n*** SKIPPED {test}: tmux is missing ***\n");
        return false;
    }
    true
}

/// A tmux session, removed even when the test fails.
pub struct Session(pub String);

impl Session {
    /// Starts a session named after `name` and this process running `perimeter run ARGS`
    /// in a 100x30 window; when perimeter ends, its exit status goes to `status` and the
    /// pane shows RUN-ENDED.
    pub fn start(name: &str, args: &str, status: &Path) -> Self {
        let run = format!(
            "{} run {args}; echo $? > {}; echo RUN-ENDED; sleep 60",
            env!("CARGO_BIN_EXE_perimeter"),
            status.display()
        );
        Self::start_command(name, &run)
    }

    /// Starts a session running the shell command `command` in a 100x30 window.
    pub fn start_command(name: &str, command: &str) -> Self {
        let session = Session(format!("perimeter-test-{name}-{}", std::process::id()));
        let s = session.0.as_str();
        tmux(&[
            "new-session",
            "-d",
            "-s",
            s,
            "-x",
            "100",
            "-y",
            "30",
            command,
        ]);
        session
    }

    /// The pane's terminal device.
    pub fn tty(&self) -> String {
        tmux(&["display-message", "-p", "-t", &self.0, "#{pane_tty}"])
            .trim()
            .to_string()
    }

    /// Types `keys` as they are (no key names).
    pub fn type_text(&self, keys: &str) {
        tmux(&["send-keys", "-t", &self.0, "-l", keys]);
    }

    /// Presses named keys (`C-a`, `Enter`, ...).
    pub fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    /// What the pane shows.
    pub fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.0])
    }

    /// Waits until `f` holds of the pane's text (up to `secs`); returns the text.
    pub fn until(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.screen();
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
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// The terminal's settings, one word each (`-icanon`, `opost`, ...).
pub fn stty(tty: &str) -> Vec<String> {
    let o = Command::new("stty")
        .args(["-F", tty, "-a"])
        .output()
        .unwrap();
    text(&o.stdout)
        .split([' ', '\n', ';'])
        .map(String::from)
        .collect()
}

fn has(set: &[String], word: &str) -> bool {
    set.iter().any(|x| x == word)
}

/// Waits (up to a minute) until the terminal is raw: no line editing, no echo, no signals
/// from keys, output still post-processed.
pub fn wait_raw(tty: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let raw = stty(tty);
        if has(&raw, "-icanon") && has(&raw, "-echo") && has(&raw, "-isig") {
            assert!(has(&raw, "opost"), "output still post-processed: {raw:?}");
            return;
        }
        assert!(Instant::now() < deadline, "never raw: {raw:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The terminal is as a shell left it.
pub fn assert_restored(tty: &str) {
    let after = stty(tty);
    assert!(
        has(&after, "icanon") && has(&after, "echo") && has(&after, "isig"),
        "{after:?}"
    );
}
