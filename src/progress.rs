//! Progress for long stages: bars on a terminal, all in one display, plain log lines
//! elsewhere (CI logs, or `CI` set). Log lines go through [`log_writer`], which hides the
//! bars while a line is written, so neither tears the other.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Every bar of the process, drawn together on stderr.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Bars only for a person at a terminal.
fn on_terminal() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// stderr for log lines, written with the bars hidden for the moment.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs `f` (a print to stdout, which is often the same terminal) with the bars hidden.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    bars().suspend(f)
}

/// The writer to log with (`tracing_subscriber::fmt().with_writer(log_writer)`).
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// A wait on AWS (an import, a copy): on a terminal a bar with the state AWS reports, its
/// percent and the time so far; elsewhere an INFO line each time the state or percent
/// changes.
pub(crate) struct Wait {
    label: String,
    bar: Option<ProgressBar>,
    last: Mutex<Option<(String, Option<u64>)>>,
}

impl Wait {
    pub(crate) fn new(label: impl Into<String>) -> Wait {
        let label = label.into();
        let bar = on_terminal().then(|| {
            let bar = bars().add(ProgressBar::new(100));
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:20}] {pos:>3}% {elapsed_precise}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_secs(1));
            bar
        });
        Wait {
            label,
            bar,
            last: Mutex::new(None),
        }
    }

    /// What AWS says now: its state (`pending`, `active: converting`, …) and percent.
    pub(crate) fn update(&self, state: &str, percent: Option<u64>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = (state.to_string(), percent);
        if last.as_ref() == Some(&now) {
            return;
        }
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{}: {state}", self.label));
                if let Some(p) = percent {
                    bar.set_position(p.min(100));
                }
            }
            None => tracing::info!(
                "{}: {state}{}",
                self.label,
                percent.map(|p| format!(" ({p}%)")).unwrap_or_default()
            ),
        }
        *last = Some(now);
    }

    /// The wait is over: the bar stays, full, with `state`.
    pub(crate) fn finish(&self, state: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(100);
            bar.finish_with_message(format!("{}: {state}", self.label));
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// How often a log line is written when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// A byte counter for `label` (e.g. "uploading s3://b/k").
    pub(crate) fn bytes(label: impl Into<String>, total: u64) -> Progress {
        let label = label.into();
        let bar = on_terminal().then(|| {
            let bar = bars().add(ProgressBar::new(total));
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

    pub(crate) fn inc(&self, n: u64) {
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

    /// Done: the bar stays, full, as the record of the transfer.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
