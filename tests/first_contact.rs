//! First contact: a machine without AWS credentials, an endpoint that is not there,
//! `--help`, shell completions and the man page. No stand-in: what is tested is what imgpub
//! says before AWS answers anything.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::tempdir::TempDir;

/// A port on loopback that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// imgpub with an empty HOME, no AWS_* variables but `env`, and the instance-metadata
/// endpoint on a closed port (the real one may answer on a build machine).
fn bare(home: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgpub"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_credentials_is_one_line_naming_every_source_tried() {
    let home = TempDir::new();
    let image = common::make_raw(home.path(), "os.raw", 1, 1, 7);
    let image = image.to_str().unwrap();
    for args in [
        vec!["aws", "list-regions", "--region", "us-east-1"],
        vec![
            "aws",
            "upload",
            "--region",
            "us-east-1",
            "--bucket",
            "s3://images/ci",
            "--file",
            image,
        ],
    ] {
        let out = bare(home.path(), &[], &args);
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: one line only, got {lines:?}");
        let line = &lines[0];
        assert!(line.starts_with("error: no AWS credentials"), "{line}");
        for source in [
            "environment (AWS_ACCESS_KEY_ID is not set)",
            "shared files (~/.aws/credentials and ~/.aws/config do not exist)",
            "web identity",
            "container",
            "instance metadata",
            "aws configure",
            "--profile",
            "--credentials-file",
        ] {
            assert!(line.contains(source), "{source:?} not in {line}");
        }
        // Words, not the SDK's debug structures.
        assert!(
            !line.contains('{') && !line.contains("CredentialsNotLoaded"),
            "{line}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_profile_that_is_not_there_is_named() {
    let home = TempDir::new();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    common::write_file(
        &home.path().join(".aws"),
        "credentials",
        "[other]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = abc\n",
    );
    let out = bare(
        home.path(),
        &[],
        &["aws", "list-regions", "--region", "us-east-1"],
    );
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("shared files (no profile \"default\" in ~/.aws/credentials"),
        "{}",
        lines[0]
    );
}

/// `--profile nope` (issue #29, item 7): the SDK says only "the credential provider was
/// not enabled"; imgpub names the profile, the ones there are and how to make it, as bad
/// input before any request.
#[test]
fn a_profile_flag_naming_no_profile_says_which_there_are() {
    let home = TempDir::new();
    for (files, there) in [(false, "define no profile"), (true, "define other")] {
        if files {
            std::fs::create_dir_all(home.path().join(".aws")).unwrap();
            common::write_file(
                &home.path().join(".aws"),
                "config",
                "[profile other]\nregion = us-east-1\n",
            );
        }
        let out = bare(
            home.path(),
            &[],
            &[
                "aws",
                "list-regions",
                "--region",
                "us-east-1",
                "--profile",
                "nope",
            ],
        );
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "{lines:?}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        for part in [
            "profile \"nope\" is not defined",
            there,
            "aws configure --profile nope",
        ] {
            assert!(lines[0].contains(part), "{part:?} not in {}", lines[0]);
        }
    }
}

#[test]
fn debug_shows_the_sdk_details() {
    let home = TempDir::new();
    let out = bare(
        home.path(),
        &[],
        &["aws", "list-regions", "--region", "us-east-1", "-d"],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(lines.len() > 1, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("provider in chain did not provide credentials")),
        "{lines:?}"
    );
    assert!(lines
        .last()
        .unwrap()
        .starts_with("error: no AWS credentials"));
}

/// An endpoint that accepts each connection and closes it at once: imgpub's first call
/// tries it twice at most (its first-contact retry budget), then says which endpoint failed.
/// The count of connections, not the time taken, shows there is no retry storm.
#[test]
fn a_dead_endpoint_is_tried_twice_at_most() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let home = TempDir::new();
    let keys = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "secret-not-shown".to_string()),
    ];
    let args = [
        "aws",
        "list-regions",
        "--region",
        "us-east-1",
        "--endpoint-url",
        &url,
    ];
    let out = bare(home.path(), &keys, &args);
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert!(lines.last().unwrap().contains(&url), "{lines:?}");
    let n = accepted.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} connections: {lines:?}");
}

#[test]
fn unreachable_endpoint_is_named_with_where_it_came_from() {
    let home = TempDir::new();
    let keys = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "secret-not-shown".to_string()),
    ];
    let url = format!("http://127.0.0.1:{}", closed_port());

    let out = bare(
        home.path(),
        &keys,
        &[
            "aws",
            "list-regions",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &url,
        ],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!(
            "cannot reach the AWS endpoint {url} (from --endpoint-url)"
        )),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("credentials"), "{}", lines[0]);

    let mut env = keys.to_vec();
    env.push(("AWS_ENDPOINT_URL", url.clone()));
    let out = bare(
        home.path(),
        &env,
        &["aws", "list-regions", "--region", "us-east-1"],
    );
    let lines = stderr_lines(&out);
    assert!(
        lines[0].contains(&format!("{url} (from $AWS_ENDPOINT_URL)")),
        "{lines:?}"
    );
}

#[test]
fn usage_errors_do_not_show_an_endpoint_from_the_environment_as_typed() {
    let home = TempDir::new();
    let out = bare(
        home.path(),
        &[("AWS_ENDPOINT_URL", "http://127.0.0.1:1".to_string())],
        // clap's usage line repeats the arguments given: a required one is missing here.
        &["aws", "publish-ssm", "--image", "ami-0123456789abcdef0"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--parameter"), "{err}");
    assert!(!err.contains("--endpoint-url"), "{err}");
}

#[test]
fn upload_help_puts_its_own_flags_first() {
    let home = TempDir::new();
    let out = bare(home.path(), &[], &["aws", "upload", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    let at = |needle: &str| {
        help.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in --help:\n{help}"))
    };
    let own = at("--file").max(at("--bucket"));
    for heading in ["AWS options:", "Logging options:"] {
        assert!(own < at(heading), "{heading} before --file/--bucket");
    }
    for global in [
        "--region",
        "--profile",
        "--endpoint-url",
        "--log-level",
        "--debug",
    ] {
        assert!(own < at(global), "{global} before --file/--bucket");
    }
    assert!(at("AWS options:") < at("--region"));
    assert!(at("Logging options:") < at("--log-level"));
    assert!(at("Example:") > at("--log-level"), "example at the end");
    assert!(help[at("Example:")..].contains("imgpub aws upload"));
}

#[test]
fn every_command_has_an_example() {
    let home = TempDir::new();
    let out = bare(home.path(), &[], &["aws", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1) // the rest of the "Commands:" line
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 14, "{commands:?}");
    for command in commands {
        let out = bare(home.path(), &[], &["aws", command, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Example:\n  imgpub aws ") || help.contains("Examples:\n  imgpub aws "),
            "{command} --help has no example"
        );
    }
}

/// What bash completes for the words of `line` (the last one being typed), with the script
/// `imgpub completions bash` printed, through the function `complete -p imgpub` names.
fn bash_completes(script: &Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        r#"source {script}
spec=$(complete -p imgpub) || exit 3
func=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
"$func" imgpub "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display(),
        words = words.join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    let home = TempDir::new();
    let out = bare(home.path(), &[], &["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = common::write_file(
        home.path(),
        "imgpub.bash",
        &String::from_utf8_lossy(&out.stdout),
    );
    let commands = bash_completes(&script, "imgpub aws up");
    assert!(commands.contains(&"upload".to_string()), "{commands:?}");
    assert!(
        commands.contains(&"upload-object".to_string()),
        "{commands:?}"
    );
    let flags = bash_completes(&script, "imgpub aws upload --x86-");
    assert_eq!(flags, ["--x86-boot-mode"]);
    // Issue #29: --arch completes to its values, not to file names.
    let mut arches = bash_completes(&script, "imgpub aws upload --arch ");
    arches.sort();
    assert_eq!(arches, ["arm64", "x86_64"]);
    // register-ami's help shows its own flags, not upload's image and transfer ones.
    let help =
        String::from_utf8_lossy(&bare(home.path(), &[], &["aws", "register-ami", "--help"]).stdout)
            .into_owned();
    for hidden in [
        "--file",
        "--bucket",
        "--part-size",
        "--via",
        "--source-object",
    ] {
        assert!(!help.contains(hidden), "{hidden} in register-ami --help");
    }
    assert!(help.contains("--source-snapshot"), "{help}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = bare(home.path(), &[], &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("upload"),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_render() {
    let home = TempDir::new();
    let out = bare(home.path(), &[], &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = common::write_file(
        home.path(),
        "imgpub.1",
        &String::from_utf8_lossy(&out.stdout),
    );
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man (man-db) is installed");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert!(text.contains("Publish disk images as AWS AMIs"), "{text}");
    // Issue #29: `imgpub man` covers every command, not only the top-level flags.
    for (command, flag) in [
        ("imgpub aws upload", "--part-size"),
        ("imgpub aws copy-regions", "--concurrency"),
        ("imgpub aws gc", "--duration"),
        ("imgpub aws create-publisher", "--github-repo"),
    ] {
        assert!(text.contains(command), "{command} not in the page");
        assert!(text.contains(flag), "{flag} not in the page");
    }

    let dir = home.path().join("man1");
    std::fs::create_dir_all(&dir).unwrap();
    let out = bare(home.path(), &[], &["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let upload = dir.join("imgpub-aws-upload.1");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&upload)
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        text.contains("--x86-boot-mode") || text.contains("--x86‐boot‐mode"),
        "{text}"
    );
}

/// A reader that went away (`imgpub … | head -1`) is no reason to panic or fail.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let home = TempDir::new();
    for args in [
        vec!["aws", "policy", "--for", "upload,copy"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_imgpub"))
            .env_clear()
            .env("HOME", home.path())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn version_names_the_checksum_code_this_cpu_gets() {
    let home = TempDir::new();
    let long = bare(home.path(), &[], &["--version"]);
    assert!(long.status.success(), "{long:?}");
    let text = String::from_utf8_lossy(&long.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("imgpub "), "{text}");
    let checksums = lines.get(1).copied().unwrap_or_default();
    for part in [
        "checksums: SHA-256",
        "lanes",
        "CRC32C (HTTPS) crc-fast",
        "aws-lc-rs",
    ] {
        assert!(checksums.contains(part), "{part:?} not in {checksums:?}");
    }
    // -V stays one line, for scripts that read the version.
    let short = bare(home.path(), &[], &["-V"]);
    assert_eq!(String::from_utf8_lossy(&short.stdout).lines().count(), 1);
}

/// AWS-LC's CPU-jitter entropy cost ~28 ms of CPU at the first TLS handshake of every run;
/// `.cargo/config.toml` builds AWS-LC without it (docs/benchmarks.md, "HTTPS"). Cargo reads
/// that file from the working directory, so a build from elsewhere would bring it back
/// unnoticed: the binary must not hold the jitter collector.
#[test]
fn the_binary_is_built_without_cpu_jitter_entropy() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_imgpub")).unwrap();
    // Searched as text: std's search is optimized even in a debug test build.
    let text = String::from_utf8_lossy(&binary);
    assert!(
        !text.contains("jent_entropy_collector_alloc"),
        "imgpub holds AWS-LC's jitter entropy: build from the repository so cargo reads \
         .cargo/config.toml (AWS_LC_SYS_NO_JITTER_ENTROPY=1)"
    );
}
