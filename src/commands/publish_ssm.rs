//! `publish-ssm`: SSM parameters (`aws:ec2:image`) that point at the AMI in each region.
//! [`plan`] checks every AMI and parameter first (nothing is written if any check fails);
//! [`apply`] writes each region's parameters, one line per parameter.

use crate::aws::calls::{Call, Op};
use crate::aws::config::AwsContext;
use crate::aws::images::{ImageSelection, RegionalImage, Selected};
use crate::aws::regions::{failure_summary, fan_out};
use crate::aws::ssm::{self, Planned, Template};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub parameters: Vec<Planned>,
}

/// The templates, checked without AWS.
pub(crate) fn templates(parameters: &[String]) -> Result<Vec<Template>> {
    parameters.iter().map(|t| Template::parse(t)).collect()
}

/// Reads every AMI and parameter; any refusal or failure stops the command before a write.
pub(crate) async fn plan(
    ctx: &AwsContext,
    templates: &[Template],
    images: Vec<RegionalImage>,
    overwrite: bool,
) -> Result<Plan> {
    let mut parameters = vec![];
    let failures = fan_out(
        images,
        REGION_CONCURRENCY,
        |target| async move {
            let regional = ctx.in_region(&target.region);
            let facts = ssm::describe(&regional.ec2(), &target).await?;
            ssm::plan(&regional.ssm(), &facts, templates, overwrite).await
        },
        |_, mut planned| parameters.append(&mut planned),
    )
    .await;
    if let Some((_, first)) = failures.first() {
        let all: Vec<String> = failures.iter().map(|(_, e)| e.to_string()).collect();
        let detail = format!("nothing was written: {}", all.join("; "));
        // A refusal is bad input (exit 2); an AWS failure is not.
        return Err(match first {
            Error::Invalid(_) => Error::Invalid(detail),
            _ => Error::failed(
                "checking the AMIs and parameters",
                first.kind().unwrap_or(ErrorKind::Other),
                first.code(),
                detail,
            ),
        });
    }
    ssm::check_conflicts(&parameters)?;
    Ok(Plan { parameters })
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    plan.parameters
        .iter()
        .filter(|p| p.to_write())
        .map(Planned::call)
        .collect()
}

/// Every operation `publish-ssm` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::SsmGetParameter,
    Op::SsmPutParameter,
    Op::IamSimulatePrincipalPolicy,
];

/// Writes the parameters, region by region side by side; `emit` gets each one's line.
/// `validation`: how long each written parameter may take to hold its AMI.
pub(crate) async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    validation: std::time::Duration,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    let mut regions: Vec<String> = plan.parameters.iter().map(|p| p.region.clone()).collect();
    regions.sort();
    regions.dedup();
    let failures = fan_out(
        regions.clone(),
        REGION_CONCURRENCY,
        |region| async move {
            let mine: Vec<Planned> = plan
                .parameters
                .iter()
                .filter(|p| p.region == region)
                .cloned()
                .collect();
            ssm::write(&ctx.in_region(&region).ssm(), &mine, validation).await
        },
        |_, written| written.iter().for_each(|w| emit(serde_json::json!(w))),
    )
    .await;
    if failures.is_empty() {
        return Ok(());
    }
    let context = format!("writing parameters in {} regions", regions.len());
    Err(failure_summary(context, &failures))
}

#[derive(Debug, Clone)]
pub struct PublishSsmOptions {
    pub images: ImageSelection,
    /// Parameter name templates.
    pub parameters: Vec<String>,
    /// Replace a parameter that points at a different AMI.
    pub overwrite: bool,
    /// How long each written parameter may take to hold its AMI.
    pub validation_timeout: std::time::Duration,
}

/// How many parameters were created, updated and already held their AMI.
fn summary(plan: &Plan) -> String {
    let all = &plan.parameters;
    let unchanged = all
        .iter()
        .filter(|p| p.current.as_deref() == Some(p.image_id.as_str()))
        .count();
    let created = all.iter().filter(|p| p.current.is_none()).count();
    let updated = all.len() - unchanged - created;
    let mut regions: Vec<&str> = all.iter().map(|p| p.region.as_str()).collect();
    regions.sort();
    regions.dedup();
    match (created + updated, regions.len()) {
        (0, n) => format!(
            "publish-ssm: nothing to do: the {unchanged} parameters in {n} regions already hold their AMIs"
        ),
        (_, n) => format!(
            "publish-ssm: created {created} and updated {updated} parameters in {n} regions; {unchanged} already held their AMIs"
        ),
    }
}

impl Command for PublishSsmOptions {
    type Connection = Account;
    type Local = (Vec<Template>, Selected);
    type Plan = Plan;

    fn validate(&self) -> Result<(Vec<Template>, Selected)> {
        Ok((templates(&self.parameters)?, self.images.read()?))
    }

    async fn plan(&self, a: &Account, (templates, images): Self::Local) -> Result<Plan> {
        let images = images.in_region(&a.ctx.region);
        plan(&a.ctx, &templates, images, self.overwrite).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    fn policy(&self, _: &Account, _: &Plan, _: &[Call]) -> Option<String> {
        Some(needs::fix_line(For::Ssm, None, None))
    }

    /// Each parameter, the AMI it would hold and what it holds now.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        plan.parameters
            .iter()
            .filter(|p| p.to_write())
            .map(|p| match &p.current {
                None => format!(
                    "would create {} in {} holding {}",
                    p.parameter, p.region, p.image_id
                ),
                Some(now) => format!(
                    "would point {} in {} at {} (it holds {now})",
                    p.parameter, p.region, p.image_id
                ),
            })
            .collect()
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let timeout = self.validation_timeout;
        apply(&a.ctx, plan, timeout, |line| emit(Output::Json(line))).await?;
        emit(Output::Summary(summary(plan)));
        Ok(())
    }
}
