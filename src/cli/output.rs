//! What the binary writes: results on stdout (with the progress bars hidden), logs on
//! stderr, the help, completion and man pages.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use imgpub::Output;

use super::{Cli, LogLevel};

/// Whether the summary line is written: at ore's default level (NOTICE) and above.
static SUMMARY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// One result on stdout, or the run's summary on stderr.
pub fn print(output: Output) {
    match output {
        Output::Summary(line) | Output::Step(line) => {
            if SUMMARY.load(std::sync::atomic::Ordering::Relaxed) {
                // A closed stderr leaves nowhere to say so.
                let _ = imgpub::suspend(|| writeln!(std::io::stderr().lock(), "{line}"));
            }
        }
        Output::Json(value) => match serde_json::to_string(&value) {
            Ok(line) => print_line(&line),
            Err(e) => tracing::error!("cannot print the result as JSON: {e}"),
        },
        Output::Text(line) => print_line(&line),
    }
}

/// One line of results on stdout, with the bars hidden (stdout and stderr are often the same
/// terminal). A reader that went away (`| head -1`) does not stop the work: the rest of the
/// run goes on, and only the first lost line is reported.
fn print_line(line: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOST: AtomicBool = AtomicBool::new(false);
    let written = imgpub::suspend(|| writeln!(std::io::stdout().lock(), "{line}"));
    if let Err(e) = written {
        if !LOST.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot write the results to stdout ({e}); the run goes on");
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `imgpub aws` alone, as `ore aws`: the help on stdout, exit 0.
pub fn aws_help() -> ExitCode {
    let mut cli = Cli::command_ore();
    cli.build(); // names the usage line `imgpub aws`
    let help = cli
        .find_subcommand_mut("aws")
        .map(|aws| aws.render_help().to_string())
        .unwrap_or_default();
    write_stdout(help.as_bytes())
}

/// `imgpub completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    // Into a buffer: clap_complete panics when it cannot write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command_ore(), "imgpub", &mut script);
    write_stdout(&script)
}

/// `imgpub man`: the top page on stdout, or every command's page into `dir`.
pub fn man(dir: Option<std::path::PathBuf>) -> ExitCode {
    let mut cmd = Cli::command_ore();
    let Some(dir) = dir else {
        // One page for the whole tool: the top command, then every command under it, each
        // under its full name (`imgpub aws upload`), so `imgpub man | man -l -` covers all.
        cmd.build();
        let mut page = Vec::new();
        let mut rendered = clap_mangen::Man::new(cmd.clone()).render(&mut page);
        let mut stack: Vec<(String, clap::Command)> = cmd
            .get_subcommands()
            .map(|s| (format!("imgpub-{}", s.get_name()), s.clone()))
            .collect();
        stack.reverse();
        while let (Ok(()), Some((name, sub))) = (&rendered, stack.pop()) {
            let children: Vec<(String, clap::Command)> = sub
                .get_subcommands()
                .filter(|c| c.get_name() != "help")
                .map(|c| (format!("{name}-{}", c.get_name()), c.clone()))
                .collect();
            stack.extend(children.into_iter().rev());
            let sub = sub.name(name.clone()).bin_name(name.replace('-', " "));
            rendered = clap_mangen::Man::new(sub).render(&mut page);
        }
        return match rendered {
            Ok(()) => write_stdout(&page),
            Err(e) => {
                eprintln!("error: cannot render the man page: {e}");
                ExitCode::FAILURE
            }
        };
    };
    match clap_mangen::generate_to(cmd, &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: cannot write the man pages to {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. At ore's default level (NOTICE) a successful run prints its JSON and,
/// on stderr, one summary line; our own stage lines need `-v`. The SDK's own logging (credential providers, IMDS, retries)
/// never shows below DEBUG, since our error line already says what failed, in words; and it is
/// capped at `debug` even under TRACE, because its trace output carries request and response
/// bodies, and an AssumeRole response body holds a secret key.
pub fn init_logging(level: LogLevel) {
    SUMMARY.store(
        level >= LogLevel::Notice,
        std::sync::atomic::Ordering::Relaxed,
    );
    let (ours, theirs) = match level {
        LogLevel::Critical | LogLevel::Error => ("error", "off"),
        LogLevel::Warning | LogLevel::Notice => ("warn", "off"),
        LogLevel::Info => ("info", "off"),
        LogLevel::Debug => ("debug", "info,aws_config=debug"),
        LogLevel::Trace => ("trace", "debug"),
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("{theirs},imgpub={ours}"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(imgpub::log_writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
