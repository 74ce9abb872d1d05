//! A bot-like workload on a store, its metrics served for Prometheus to scrape.
//!
//! ```sh
//! cargo run --release --example observe -- 127.0.0.1:9464 [SECONDS]
//! curl http://127.0.0.1:9464/metrics
//! ```
//!
//! It installs `metrics-exporter-prometheus`'s recorder, registers sealkv's help texts
//! (`sealkv::observe::describe`), answers `GET /metrics` on the address it is given
//! (a minimal HTTP/1.1 responder: one request per connection), and runs sets, gets and
//! transactions on a temporary store for SECONDS (default: until killed). It prints
//! `commits N` each second, and after SECONDS `done commits N` (the count a scrape
//! must then show exactly), and goes on serving until killed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use sealkv::{Batch, Error, KdfParams, MasterKey, Options, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9464".into());
    let seconds: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    sealkv::observe::describe();

    let listener = TcpListener::bind(&addr)?;
    println!("serving http://{}/metrics", listener.local_addr()?);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(&conn);
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The rest of the request head, up to its blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = if request.starts_with("GET /metrics") {
                ("200 OK", handle.render())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });

    let dir = tempfile::tempdir()?;
    let opts = Options {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..Options::default()
    };
    let store = Store::create(dir.path().join("bot.sealkv"), MasterKey::generate()?, opts)?;
    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut commits = 0u64;
    let mut n = 0u64;
    while seconds.is_none_or(|s| started.elapsed() < Duration::from_secs(s)) {
        n += 1;
        let mut batch = Batch::new();
        batch.put("session", &format!("peer{}.0", n % 50), vec![7; 600]);
        store.set(&batch)?;
        store.get_one("session", &format!("peer{}.0", (n * 7) % 50))?;
        store.transaction("pre-keys", |tx| {
            tx.put("pre-key", &format!("{}", n % 812), vec![1; 96]);
            Ok::<_, Error>(())
        })?;
        commits += 2;
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!("commits {commits}");
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Done: the final count, then the metrics stay served until the process is killed
    // (a scrape after this line must see exactly this count).
    println!("done commits {commits}");
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
