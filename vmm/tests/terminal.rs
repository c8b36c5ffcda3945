//! A `stdio` console port, and COM1 (`--serial stdio`), on a real terminal, driven as a person
//! would through tmux: the terminal goes raw while the VM runs (keys reach the guest as typed
//! and come back through its echo), the window size reaches the guest's console port,
//! `Ctrl-A x` ends the run with status 0, and the terminal is as it was afterwards; a run
//! started in the background leaves the terminal alone instead of being stopped by it.
//!
//! Needs `/dev/kvm` and tmux; without either the test says so on stderr and passes without
//! running (.ci/run installs tmux). The Linux guest's shell on COM1 is tested in linux.rs.

mod common;

use common::tmux::{Session, assert_restored, runnable, wait_raw};
use common::{perimeter, tmp_dir};
use std::path::Path;
use std::time::{Duration, Instant};

/// Presses Ctrl-A x; the run ends with status 0, saying why, and the terminal comes back.
fn quit_with_ctrl_a_x(s: &Session, status: &Path) {
    s.press(&["C-a", "x"]);
    let screen = s.until(60, "Ctrl-A x ends the run", |t| t.contains("RUN-ENDED"));
    assert_eq!(std::fs::read_to_string(status).unwrap().trim(), "0");
    assert!(
        screen.contains("stopped from the terminal (Ctrl-A x)"),
        "{screen}"
    );
    assert_restored(&s.tty());
}

#[test]
fn a_terminal_is_raw_while_the_vm_runs_ctrl_a_x_quits_and_it_comes_back_as_it_was() {
    let test = "a_terminal_is_raw_while_the_vm_runs_ctrl_a_x_quits_and_it_comes_back_as_it_was";
    if !runnable(test) {
        return;
    }
    let dir = tmp_dir("terminal");
    let ctl = dir.join("ctl.sock");
    let status = dir.join("status");
    let args = format!(
        "--workload echo --timeout 120 --control {} --port name=con,backend=stdio,console",
        ctl.display()
    );
    let s = Session::start("port", &args, &status);
    s.until(60, "the guest's echo opens its port", |t| {
        t.contains("port(s) open")
    });
    wait_raw(&s.tty());

    // Typed without Enter: only the guest's echo can show it (the terminal echoes nothing).
    s.type_text("hello-raw");
    s.until(60, "the guest echoes what was typed", |t| {
        t.contains("hello-raw")
    });
    // Ctrl-A Ctrl-A sends one Ctrl-A, which the guest echoes back as it is.
    s.press(&["C-a", "C-a"]);

    // A new window size reaches the guest.
    common::tmux::tmux(&["resize-window", "-t", &s.0, "-x", "90", "-y", "25"]);
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

    quit_with_ctrl_a_x(&s, &status);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn com1_on_a_terminal_takes_keys_as_typed_and_ctrl_a_x_quits() {
    let test = "com1_on_a_terminal_takes_keys_as_typed_and_ctrl_a_x_quits";
    if !runnable(test) {
        return;
    }
    let dir = tmp_dir("terminal-com1");
    let status = dir.join("status");
    // No stdio port: stdin is COM1's. The guest echoes what COM1 receives back to COM1.
    let s = Session::start(
        "com1",
        "--workload uart-echo:1000 --timeout 120 --port name=n,backend=null",
        &status,
    );
    // The guest prints nothing before it has read every byte; the terminal going raw says
    // that COM1's input is being read.
    wait_raw(&s.tty());
    s.type_text("typed-to-com1");
    s.until(60, "the guest echoes what was typed", |t| {
        t.contains("typed-to-com1")
    });
    quit_with_ctrl_a_x(&s, &status);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_started_in_the_background_leaves_the_terminal_alone() {
    let test = "a_run_started_in_the_background_leaves_the_terminal_alone";
    if !runnable(test) {
        return;
    }
    let dir = tmp_dir("terminal-background");
    let status = dir.join("status");
    // An interactive shell's job control: `&` gives perimeter a process group of its own,
    // not the terminal's foreground. Touching the terminal's settings, or reading it, would
    // stop it (SIGTTOU, SIGTTIN) instead of letting it end by its timeout. Both users of
    // stdin: the default ports' stdio console port, then COM1.
    let bin = env!("CARGO_BIN_EXE_perimeter");
    let command = format!(
        "bash --norc -i -c '{bin} run --workload hang --timeout 2 & wait $!; a=$?; \
         {bin} run --workload hang --timeout 2 --port name=n,backend=null & wait $!; \
         echo $a $? > {}; echo RUN-ENDED; sleep 60'",
        status.display()
    );
    let s = Session::start_command("background", &command);
    s.until(60, "both runs end by their timeout", |t| {
        t.contains("RUN-ENDED")
    });
    assert_eq!(
        std::fs::read_to_string(&status).unwrap().trim(),
        "124 124",
        "{}",
        s.screen()
    );
    assert_restored(&s.tty());
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
