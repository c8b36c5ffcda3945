use super::server::{Line, Lines};
use super::*;
use device_model::console::ConsoleRuntime;
use device_model::console::backend::PortSpec;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

fn runtime(ports: &[&str]) -> ConsoleRuntime {
    let specs: Vec<PortSpec> = ports
        .iter()
        .map(|n| PortSpec::parse(&format!("name={n},backend=null")).unwrap())
        .collect();
    ConsoleRuntime::start(&specs, &[]).unwrap()
}

fn context(rt: &ConsoleRuntime, n: usize) -> Context {
    Context {
        console: rt.handle(),
        backends: vec!["null".into(); n],
        paths: vec![None; n],
        complete: Box::new(|s| s.transport.resets = 7),
        serial: Some(Default::default()),
    }
}

fn socket(
    ports: &[&str],
) -> (
    ConsoleRuntime,
    ControlSocket,
    PathBuf,
    mpsc::Receiver<Outcome>,
) {
    let rt = runtime(ports);
    let path = std::env::temp_dir().join(format!(
        "perimeter-control-{}-{}.sock",
        std::process::id(),
        ports.join("")
    ));
    let (tx, rx) = mpsc::channel();
    let c = ControlSocket::start(&path, context(&rt, ports.len()), tx).unwrap();
    (rt, c, path, rx)
}

fn ask(c: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    c.get_mut().write_all(line).unwrap();
    let mut answer = String::new();
    c.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn client(path: &Path) -> BufReader<UnixStream> {
    let c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(c)
}

#[test]
fn requests_list_count_remove_and_add_ports_and_bad_ones_say_why() {
    let rt = runtime(&["a", "b"]);
    let ctx = context(&rt, 2);
    let ask = |r: Request| ctx.answer(&r);
    let ports = ask(Request::Ports);
    assert_eq!(ports["ok"], true);
    assert_eq!(ports["ports"][1]["name"], "b");
    assert_eq!(ports["ports"][1]["backend"], "null");
    assert_eq!(ports["ports"][1]["plugged"], true);
    assert_eq!(ports["ports"][1]["path"], Value::Null);
    assert_eq!(ports["ports"][1]["tx_bytes"], 0);
    let remove = |p: &str| Request::Remove { port: p.into() };
    let add = |p: &str| Request::Add { port: p.into() };
    assert_eq!(ask(remove("b")), json!({"ok": true, "removed": "b"}));
    let again = ask(remove("b"));
    assert_eq!(again["ok"], false);
    assert!(again["error"].as_str().unwrap().contains("not plugged in"));
    assert_eq!(ask(Request::Ports)["ports"][1]["plugged"], false);
    assert_eq!(ask(add("b")), json!({"ok": true, "added": "b"}));
    assert!(
        ask(add("b"))["error"]
            .as_str()
            .unwrap()
            .contains("already plugged in")
    );
    assert!(
        ask(add("zz"))["error"]
            .as_str()
            .unwrap()
            .contains("no port named")
    );
    let stats = ask(Request::Stats);
    assert_eq!(stats["stats"]["ports"][0]["name"], "a");
    assert_eq!(
        stats["stats"]["transport"]["resets"], 7,
        "completed by the VMM"
    );
    assert_eq!(stats["stats"]["serial"]["out_lost"], 0, "COM1's counters");
    let _ = rt.finish(Duration::from_secs(1));
}

#[test]
fn requests_sent_by_a_client_that_leaves_at_once_are_all_carried_out() {
    let (rt, c, path, _rx) = socket(&["a", "b", "c"]);
    let h = rt.handle();
    let mut client = UnixStream::connect(&path).unwrap();
    client
        .write_all(b"remove a\n{\"cmd\":\"remove\",\"port\":\"b\"}\nremove c\n")
        .unwrap();
    client.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !(0..3).all(|i| h.port(i).unwrap().removed()) {
        assert!(std::time::Instant::now() < until, "every port removed");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let _ = rt.finish(Duration::from_secs(1));
}

#[test]
fn clients_are_served_at_once_and_bad_lines_get_short_errors() {
    let (rt, c, path, rx) = socket(&["x", "y"]);
    // An idle client, and one that sent half a line, hold nobody up.
    let _idle = UnixStream::connect(&path).unwrap();
    let mut half = UnixStream::connect(&path).unwrap();
    half.write_all(b"por").unwrap();
    let mut me = client(&path);
    assert_eq!(ask(&mut me, b"ports\n")["ports"][0]["name"], "x");
    let e = ask(&mut me, b"ports \xff\xfe\n");
    assert_eq!(e, json!({"ok": false, "error": "a request is UTF-8 text"}));
    let mut long = vec![b'z'; 1 << 20];
    long.push(b'\n');
    let e = ask(&mut me, &long)["error"].as_str().unwrap().to_string();
    assert!(e.contains("at most 4096 bytes"), "{e}");
    let e = ask(
        &mut me,
        &[b"fly ".as_slice(), &[b'q'; 4000], b"\n"].concat(),
    );
    let e = e["error"].as_str().unwrap();
    assert!(e.len() < 300 && e.starts_with("unknown request"), "{e}");
    // The connection still works, and so does the half line once it is finished.
    assert_eq!(
        ask(&mut me, b"remove y\n"),
        json!({"ok": true, "removed": "y"})
    );
    half.write_all(b"ts\n").unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut half = BufReader::new(half);
    let mut answer = String::new();
    half.read_line(&mut answer).unwrap();
    let doc: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(doc["ports"][1]["plugged"], false);
    // `shutdown` answers, then ends the run.
    assert!(rx.try_recv().is_err());
    assert_eq!(
        ask(&mut me, b"shutdown\n"),
        json!({"ok": true, "shutdown": true})
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(Outcome::Shutdown)
    );
    drop(c);
    assert!(
        !path.exists(),
        "the socket file goes with the control socket"
    );
    let _ = rt.finish(Duration::from_secs(1));
}

#[test]
fn more_clients_than_the_limit_are_told_so_and_the_rest_still_served() {
    let (rt, c, path, _rx) = socket(&["m"]);
    let mut kept: Vec<BufReader<UnixStream>> = (0..MAX_CLIENTS).map(|_| client(&path)).collect();
    // Each of them has been accepted once it got an answer.
    for k in &mut kept {
        assert_eq!(ask(k, b"ports\n")["ok"], true);
    }
    let mut extra = client(&path);
    let mut answer = String::new();
    extra.read_line(&mut answer).unwrap();
    assert!(answer.contains("clients are connected already"), "{answer}");
    drop(kept.pop());
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = client(&path);
        let mut answer = String::new();
        again.get_mut().write_all(b"ports\n").unwrap();
        again.read_line(&mut answer).unwrap();
        if answer.contains("\"ok\":true") {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "a place came free: {answer}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let _ = rt.finish(Duration::from_secs(1));
}

#[test]
fn lines_are_split_bounded_and_checked() {
    let mut l = Lines::default();
    assert_eq!(l.push(b"po"), []);
    assert_eq!(
        l.push(b"rts\nadd a\n\xff\n"),
        [
            Line::Text("ports".into()),
            Line::Text("add a".into()),
            Line::NotUtf8
        ]
    );
    let long = vec![b'x'; 3 * MAX_LINE];
    assert_eq!(l.push(&long), []);
    assert!(l.buf.len() < MAX_LINE);
    assert_eq!(l.push(b"\nok\n"), [Line::TooLong, Line::Text("ok".into())]);
}
