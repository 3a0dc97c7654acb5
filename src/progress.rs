//! Progress for long stages: a bar on a terminal, plain log lines elsewhere (CI logs).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a log line is written when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// A byte counter for `label` (e.g. "uploading s3://b/k").
    pub fn bytes(label: impl Into<String>, total: u64) -> Progress {
        let label = label.into();
        let bar =
            (std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()).then(|| {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(label.clone());
                bar
            });
        Progress {
            label,
            total,
            done: AtomicU64::new(0),
            bar,
            last_log: Mutex::new(Instant::now()),
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    tracing::info!(
                        "{}: {} of {} MiB ({}%)",
                        self.label,
                        done >> 20,
                        self.total >> 20,
                        done * 100 / self.total.max(1)
                    );
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
