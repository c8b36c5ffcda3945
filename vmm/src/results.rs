//! The guest's structured results: `@result key=value ...` lines on its debug console,
//! collected instead of printed, checked against the host's own figures where both exist
//! (a `tx` CRC against the `null` backend's), and shown as a table or JSON.

use device_model::console::ConsoleStats;
use device_model::console::stages::STAGES;
use serde::Serialize;

/// The prefix of a result line.
pub const PREFIX: &[u8] = b"@result ";

/// One result: its fields in the order the guest gave them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuestResult {
    /// `key=value` pairs.
    pub fields: Vec<(String, String)>,
    /// The host's verdict on fields it can check (`crc` of a `tx` against its port's
    /// checksum): "ok", "MISMATCH", or empty when there is nothing to compare.
    pub host_check: String,
}

impl GuestResult {
    /// Parses the part of a result line after [`PREFIX`]; words without `=` are ignored.
    pub fn parse(line: &str) -> GuestResult {
        GuestResult {
            fields: line
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            host_check: String::new(),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// Compares what the host can: a `tx` result's CRC and byte count with its port's `null`
/// backend.
pub fn check(results: &mut [GuestResult], console: &ConsoleStats) {
    for r in results {
        if r.get("workload") != Some("tx") {
            continue;
        }
        let Some(p) = r
            .get("port")
            .and_then(|n| console.ports.iter().find(|p| p.name == n))
        else {
            continue;
        };
        let guest_crc = r.get("crc").and_then(|c| u32::from_str_radix(c, 16).ok());
        r.host_check = match (guest_crc, p.out_crc32) {
            (Some(g), Some(h)) if g == h && r.num("bytes") == Some(p.out_bytes) => "ok",
            (Some(_), Some(_)) => "MISMATCH",
            _ => "",
        }
        .into();
    }
}

fn us(ns: Option<u64>) -> String {
    ns.map_or_else(String::new, |n| format!("{:.1}", n as f64 / 1000.0))
}

/// The results as a table: one row each.
pub fn table(results: &[GuestResult]) -> String {
    let mut s = format!(
        "{:<12} {:<8} {:>7} {:>12} {:>9} {:>9} {:>10} {:>10} {:>10}  {}\n",
        "workload",
        "port",
        "size",
        "bytes",
        "MiB/s",
        "memcpy",
        "median us",
        "p99 us",
        "floor us",
        "check"
    );
    for r in results
        .iter()
        .filter(|r| r.get("workload") != Some("stages"))
    {
        let check = match (r.get("check"), r.host_check.as_str()) {
            (Some(g), "") => g.to_string(),
            (None, h) => h.to_string(),
            (Some(g), h) => format!("{g}, host {h}"),
        };
        s += &format!(
            "{:<12} {:<8} {:>7} {:>12} {:>9} {:>9} {:>10} {:>10} {:>10}  {}\n",
            r.get("workload").unwrap_or("?"),
            r.get("port").unwrap_or(""),
            r.get("size").unwrap_or(""),
            r.get("bytes").or(r.get("count")).unwrap_or(""),
            r.get("mib_s").unwrap_or(""),
            r.get("memcpy_mib_s").unwrap_or(""),
            us(r.num("median_ns")),
            us(r.num("p99_ns")),
            us(r.num("doorbell_ns")),
            check
        );
    }
    s + &stages_lines(results)
}

/// A `stages` result as lines under the table: where the round trips' time went.
fn stages_lines(results: &[GuestResult]) -> String {
    let mut s = String::new();
    for r in results
        .iter()
        .filter(|r| r.get("workload") == Some("stages"))
    {
        let port = r.get("port").unwrap_or("?");
        match r.get("problem") {
            Some("clocks-loose") => {}
            Some(p) => {
                s += &format!("stages of {port}: not matched ({p})\n");
                continue;
            }
            None => {}
        }
        let parts: Vec<String> = STAGES
            .iter()
            .map(|k| format!("{k} {}", us(r.num(&format!("{k}_ns")))))
            .collect();
        s += &format!(
            "stages of {port}, typical trip, us: {}; sum {} of median round trip {} ({} of {} \
             trips matched, \
             clocks related to +-{} us{})\n",
            parts.join(", "),
            us(r.num("sum_ns")),
            us(r.num("round_trip_ns")),
            r.get("joined").unwrap_or("0"),
            r.get("trips").unwrap_or("0"),
            us(r.num("clock_ns")),
            if r.get("problem").is_some() {
                ": too loosely for the stages across them"
            } else {
                ""
            },
        );
    }
    s
}

/// Splits the guest's standard output into lines to print and result lines.
#[derive(Debug)]
pub struct LineSplitter {
    at_line_start: bool,
    held: Vec<u8>,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter {
            at_line_start: true,
            held: Vec::new(),
        }
    }
}

/// Longest line held back as a possible result before it is printed as it is.
const MAX_HELD: usize = 4096;

impl LineSplitter {
    /// Feeds output bytes: text goes to `print` as soon as it cannot be a result line (so
    /// prompts without a newline still show), result lines to `result` without the prefix.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        print: &mut dyn FnMut(&[u8]),
        result: &mut dyn FnMut(&str),
    ) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let holding = !self.held.is_empty() || (self.at_line_start && data[0] == b'@');
            if !holding {
                let end = nl.map_or(data.len(), |i| i + 1);
                print(&data[..end]);
                self.at_line_start = nl.is_some();
                data = &data[end..];
                continue;
            }
            match nl {
                Some(i) => {
                    self.held.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.held);
                    match line.strip_prefix(PREFIX) {
                        Some(rest) => result(&String::from_utf8_lossy(rest)),
                        None => {
                            print(&line);
                            print(b"\n");
                        }
                    }
                    self.at_line_start = true;
                }
                None => {
                    self.held.extend_from_slice(data);
                    data = &[];
                    let could_be =
                        PREFIX.starts_with(&self.held[..self.held.len().min(PREFIX.len())]);
                    if !could_be || self.held.len() > MAX_HELD {
                        print(&std::mem::take(&mut self.held));
                        self.at_line_start = false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (String, Vec<String>) {
        let (mut out, mut res) = (Vec::new(), Vec::new());
        let mut s = LineSplitter::default();
        for c in chunks {
            s.feed(c, &mut |b| out.extend_from_slice(b), &mut |r| {
                res.push(r.to_string())
            });
        }
        (String::from_utf8(out).unwrap(), res)
    }

    #[test]
    fn result_lines_are_taken_out_and_the_rest_printed_in_order() {
        let (out, res) = split(&[
            b"hello\n@result workload=tx bytes=5\nbye",
            b" now\n@res",
            b"ult a=1\n@home\n",
        ]);
        assert_eq!(out, "hello\nbye now\n@home\n");
        assert_eq!(res, ["workload=tx bytes=5", "a=1"]);
    }

    #[test]
    fn an_at_sign_inside_a_line_is_just_text() {
        let (out, res) = split(&[b"mail me @result x=1\n"]);
        assert_eq!(out, "mail me @result x=1\n");
        assert!(res.is_empty());
    }

    #[test]
    fn tx_results_are_checked_against_the_null_backends_crc() {
        let mut rs = vec![
            GuestResult::parse("workload=tx port=sink bytes=10 crc=0000abcd"),
            GuestResult::parse("workload=tx port=sink bytes=11 crc=0000abcd"),
            GuestResult::parse("workload=rx port=source check=ok"),
        ];
        let mut c = ConsoleStats::default();
        c.ports.push(device_model::console::stats::PortStats {
            name: "sink".into(),
            out_bytes: 10,
            out_crc32: Some(0xabcd),
            ..Default::default()
        });
        check(&mut rs, &c);
        assert_eq!(rs[0].host_check, "ok");
        assert_eq!(rs[1].host_check, "MISMATCH");
        assert_eq!(rs[2].host_check, "");
        let t = table(&rs);
        assert!(t.contains("MISMATCH") && t.lines().count() == 4, "{t}");
    }
}
