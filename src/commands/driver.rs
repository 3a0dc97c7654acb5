//! The one driver every command runs through, in the same order:
//!
//! 1. **validate**: flags and local files, no AWS; a refusal here is exit 2 with nothing done;
//! 2. **connect**: the configuration and, for commands that act on an account, the caller's
//!    identity (its [`Connection`] type says which);
//! 3. **plan**: read-only lookups → a typed plan;
//! 4. **check**: the calls the plan will make, as data. The permission preflight reads them,
//!    and so does `--dry-run`, which prints the ones that change something and stops;
//! 5. **apply**: does the plan, under Ctrl-C (what was done stays for a rerun), with the
//!    `imgpub aws policy …` line that grants the command's permissions added to an
//!    AccessDenied.
//!
//! A new command is a module with a [`Command`] impl, one line in [`super::Task`]'s list and
//! one in the binary's dispatch.

use std::future::Future;

use crate::aws::calls::Call;
use crate::aws::config::{self, AwsContext, AwsSettings, Identity};
use crate::aws::preflight::{self, PreflightMode};
use crate::commands::Clients;
use crate::error::{Error, Result};

/// What the flags every AWS command takes say about how to run it.
#[derive(Debug, Clone)]
pub struct Run {
    pub settings: AwsSettings,
    pub preflight: PreflightMode,
    /// Stop after the check: print the calls that would change something.
    pub dry_run: bool,
}

/// One line of a command's results on stdout.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A JSON line (most commands).
    Json(serde_json::Value),
    /// A line as it is (`list-regions`' region names, `policy`'s document or table).
    Text(String),
    /// A line of a dry run's plan, for a person: what would be created or changed, with
    /// the names, sizes, tags, grants and documents to check. The binary writes it on
    /// stderr at the default level, as the summary; the calls follow as JSON on stdout.
    Step(String),
    /// What the run did, in one sentence for a person: created, reused, changed (and what),
    /// or nothing to do (and what it looked at). The last line of every command; the binary
    /// writes it on stderr at the default level.
    Summary(String),
}

impl Output {
    /// `value` as a JSON line.
    pub fn json<T: serde::Serialize>(value: &T) -> Output {
        match serde_json::to_value(value) {
            Ok(v) => Output::Json(v),
            // Our result types are plain data; should one ever fail, say so in its place.
            Err(e) => Output::Text(format!(
                "{{\"error\":\"cannot print the result as JSON: {e}\"}}"
            )),
        }
    }
}

/// Where a command's results go, line by line, as they come.
pub(crate) type Emit<'a> = &'a mut (dyn FnMut(Output) + Send);

/// What a command works with once connected; the type says what it can do.
pub(crate) trait Connection: Sized {
    /// Connects as `settings` say.
    fn connect(settings: &AwsSettings) -> impl Future<Output = Result<Self>>;

    /// The permission preflight over `calls`; `fix` is the policy line that grants them.
    fn preflight(
        &self,
        calls: &[Call],
        mode: PreflightMode,
        fix: &str,
    ) -> impl Future<Output = Result<()>>;
}

/// The caller's account: the configuration and who the credentials belong to (STS
/// GetCallerIdentity, the first call of every command that acts on an account).
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub ctx: AwsContext,
    pub identity: Identity,
}

impl Account {
    /// Clients of the command's region, for buckets of the caller's own account.
    pub(crate) fn clients(&self) -> Clients {
        Clients::for_identity(&self.ctx, &self.identity)
    }
}

impl Connection for Account {
    async fn connect(settings: &AwsSettings) -> Result<Self> {
        let ctx = config::load(settings).await?;
        let identity = ctx.verify_identity().await?;
        Ok(Account { ctx, identity })
    }

    async fn preflight(&self, calls: &[Call], mode: PreflightMode, fix: &str) -> Result<()> {
        preflight::run(&self.ctx, &self.identity, calls, mode, fix).await
    }
}

/// An endpoint without an account: `upload-object` talks to any S3-compatible server, which
/// has no STS and no IAM, so there is no identity and no preflight (an S3 error still names
/// the problem).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub ctx: AwsContext,
}

impl Connection for Endpoint {
    async fn connect(settings: &AwsSettings) -> Result<Self> {
        Ok(Endpoint {
            ctx: config::load(settings).await?,
        })
    }

    async fn preflight(&self, _: &[Call], _: PreflightMode, _: &str) -> Result<()> {
        Ok(())
    }
}

/// No connection: `policy` needs no credentials; it looks up the caller itself, when it can,
/// to fill in the account and partition.
#[derive(Debug, Clone)]
pub(crate) struct Offline {
    pub settings: AwsSettings,
}

impl Connection for Offline {
    async fn connect(settings: &AwsSettings) -> Result<Self> {
        Ok(Offline {
            settings: settings.clone(),
        })
    }

    async fn preflight(&self, _: &[Call], _: PreflightMode, _: &str) -> Result<()> {
        Ok(())
    }
}

/// One command: its steps, in the order the driver runs them.
pub(crate) trait Command: Sync {
    /// What the command connects as.
    type Connection: Connection + Sync;
    /// What validation found (a parsed image, the AMIs of `--images-from`), for the plan.
    type Local: Send;
    type Plan: Sync;

    /// The local checks: flags and files, without AWS. May block (it reads files); it runs
    /// off the async runtime.
    fn validate(&self) -> Result<Self::Local>;

    /// The region to connect in when the flags name none (a release manifest names its
    /// source region).
    fn region(&self, _local: &Self::Local) -> Option<String> {
        None
    }

    /// Read-only lookups → the plan.
    fn plan(
        &self,
        conn: &Self::Connection,
        local: Self::Local,
    ) -> impl Future<Output = Result<Self::Plan>>;

    /// The calls [`Command::apply`] will make, for the preflight and `--dry-run`.
    fn check(&self, conn: &Self::Connection, plan: &Self::Plan) -> Vec<Call>;

    /// The `imgpub aws policy …` line that grants what the command needs, named when IAM
    /// refuses a call; `None` for commands no policy covers.
    fn policy(&self, conn: &Self::Connection, plan: &Self::Plan, calls: &[Call]) -> Option<String>;

    /// The plan in words, for `--dry-run`: one line per step that would create or change
    /// something. By default each changing call, named; commands whose plan holds more (a
    /// name, a size, tags, a policy) say it.
    fn describe(
        &self,
        _conn: &Self::Connection,
        _plan: &Self::Plan,
        calls: &[Call],
    ) -> Vec<String> {
        calls_in_words(calls)
    }

    /// Does the plan; results go to `emit`.
    fn apply(
        &self,
        conn: &Self::Connection,
        plan: &Self::Plan,
        emit: Emit<'_>,
    ) -> impl Future<Output = Result<()>>;
}

/// Each call that changes something, named: what a dry run says without a plan in words.
pub(crate) fn calls_in_words(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.changes())
        .map(Call::in_words)
        .collect()
}

/// Runs `command` through every step; results go to `emit`. What could not be checked for
/// want of permission is said once at the end ([`crate::aws::unchecked`]).
pub(crate) async fn drive<C>(command: C, run: &Run, emit: Emit<'_>) -> Result<()>
where
    C: Command + Send + 'static,
{
    // The summary waits for the end of the run: what could not be checked is part of it.
    let mut summary = None;
    let (result, skipped) = {
        let mut held = |line: Output| match line {
            Output::Summary(line) => summary = Some(line),
            other => emit(other),
        };
        crate::aws::unchecked::collect(steps(command, run, &mut held)).await
    };
    // The whole cause chain (the SDK's, for an AWS error) with `-d`: the error line the
    // binary prints is one line, for a person.
    if let Err(e) = &result {
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            tracing::debug!("caused by: {c}");
            cause = c.source();
        }
    }
    // In the summary on success (the permissions ore needed suffice: said, not warned), as a
    // warning when the run failed, where it may be why.
    let unchecked = (!skipped.is_empty()).then(|| {
        format!(
            "not checked: {}; `imgpub aws policy` prints the permissions that check them",
            skipped.join("; ")
        )
    });
    match (&result, summary, unchecked) {
        (Ok(()), Some(line), Some(unchecked)) => {
            emit(Output::Summary(format!("{line}; {unchecked}")))
        }
        (_, Some(line), None) => emit(Output::Summary(line)),
        (_, summary, Some(unchecked)) => {
            summary
                .into_iter()
                .for_each(|line| emit(Output::Summary(line)));
            tracing::warn!("{unchecked}");
        }
        (_, None, None) => {}
    }
    result
}

async fn steps<C>(command: C, run: &Run, emit: Emit<'_>) -> Result<()>
where
    C: Command + Send + 'static,
{
    // Off the runtime: validation reads files, and `--images-from -` reads stdin.
    let (command, local) = crate::blocking::run(move || {
        let local = command.validate()?;
        Ok((command, local))
    })
    .await?;
    let conn = match (&run.settings.region, command.region(&local)) {
        (None, Some(region)) => {
            let settings = AwsSettings {
                region: Some(region),
                ..run.settings.clone()
            };
            C::Connection::connect(&settings).await?
        }
        _ => C::Connection::connect(&run.settings).await?,
    };
    let plan = command.plan(&conn, local).await?;
    let calls = command.check(&conn, &plan);
    let fix = command.policy(&conn, &plan, &calls);
    if let Some(fix) = &fix {
        conn.preflight(&calls, run.preflight, fix).await?;
    }
    if run.dry_run {
        let changes: Vec<&Call> = calls.iter().filter(|c| c.changes()).collect();
        if !changes.is_empty() {
            let steps = command.describe(&conn, &plan, &calls);
            steps.into_iter().for_each(|line| emit(Output::Step(line)));
        }
        changes.iter().for_each(|call| emit(Output::json(call)));
        emit(Output::Summary(match changes.len() {
            0 => "dry run: nothing to do; all is in place".to_string(),
            n => format!("dry run: {n} calls would change something; none was made"),
        }));
        return Ok(());
    }
    let applied = tokio::select! {
        result = command.apply(&conn, &plan, emit) => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    match fix {
        Some(fix) => applied.map_err(|e| e.with_policy_hint(&fix)),
        None => applied,
    }
}
