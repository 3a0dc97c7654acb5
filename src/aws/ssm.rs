//! SSM parameters that point at published AMIs (`DataType aws:ec2:image`), so users launch
//! `resolve:ssm:/os/stable/x86_64/latest` instead of tracking AMI ids per region.
//!
//! Everything is checked before the first write: the template (and each name it gives),
//! each AMI (it must be available), and each parameter's current value (a different one is
//! only replaced with `--overwrite`).

use std::time::Duration;

use aws_sdk_ec2::types::ImageState;
use aws_sdk_ssm::types::ParameterType;
use serde::Serialize;

use crate::aws::calls::Op;
use crate::aws::images::RegionalImage;
use crate::error::{aws, Error, ErrorKind, Result};

/// Parameter Store allows only a few writes per second per account and region by default;
/// staying under that keeps ThrottlingException (which the SDK retries with backoff) rare.
pub(crate) const PUT_INTERVAL: Duration = Duration::from_millis(500);
const DATA_TYPE: &str = "aws:ec2:image";

/// One piece of a parameter name template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Region,
    Arch,
    Name,
    Tag(String),
}

/// A parameter name template such as `/os/{name}/{arch}/latest`: `{region}`, `{arch}`
/// (x86_64, arm64), `{name}` (the AMI name) and `{tag:KEY}` (a tag of the AMI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

const PLACEHOLDERS: &str = "{region}, {arch}, {name} or {tag:KEY}";

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let bad = |why: String| {
            Error::Invalid(format!(
                "--parameter {text:?}: {why}; placeholders are {PLACEHOLDERS}"
            ))
        };
        let mut pieces = vec![];
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(bad("a '}' without its '{'".into()));
            }
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("a '{' without its '}'".into()))?;
            let inner = &rest[open + 1..open + close];
            pieces.push(match inner {
                "region" => Piece::Region,
                "arch" => Piece::Arch,
                "name" => Piece::Name,
                _ => match inner.strip_prefix("tag:") {
                    Some(key) if !key.is_empty() => Piece::Tag(key.to_string()),
                    _ => return Err(bad(format!("unknown placeholder {{{inner}}}"))),
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err(bad("empty".into()));
        }
        Ok(Template {
            text: text.to_string(),
            pieces,
        })
    }

    /// The parameter name for one AMI, checked against SSM's naming rules.
    pub fn render(&self, image: &ImageFacts) -> Result<String> {
        let mut name = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => name.push_str(t),
                Piece::Region => name.push_str(&image.region),
                Piece::Arch => name.push_str(&image.arch),
                Piece::Name => name.push_str(&image.name),
                Piece::Tag(key) => {
                    let value = image
                        .tags
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v)
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "--parameter {:?}: {} in {} has no tag {key:?}",
                                self.text, image.image_id, image.region
                            ))
                        })?;
                    name.push_str(value);
                }
            }
        }
        validate_parameter_name(&name).map_err(|why| {
            Error::Invalid(format!(
                "--parameter {:?} gives {name:?} for {} in {}: {why}",
                self.text, image.image_id, image.region
            ))
        })?;
        Ok(name)
    }
}

/// SSM's rules for parameter names, so a bad name fails before any write.
fn validate_parameter_name(name: &str) -> std::result::Result<(), String> {
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, _ . - and / only; an AMI name with other characters needs a {{tag:KEY}} instead)"
        ));
    }
    if name.len() > 1011 {
        return Err(format!("{} characters; at most 1011", name.len()));
    }
    if name.contains('/') && !name.starts_with('/') {
        return Err("a hierarchical name must start with /".into());
    }
    if name.contains("//") || name.ends_with('/') {
        return Err("empty path segment".into());
    }
    if name.matches('/').count() > 15 {
        return Err("more than 15 levels".into());
    }
    // "A parameter name can't be prefixed with "aws" or "ssm" (case-insensitive)"
    // (PutParameter API reference); for a path that is its first segment (`/aws/…` is
    // AWS's public namespace, refused as a reserved name).
    let lower = name.to_ascii_lowercase();
    let first = lower.trim_start_matches('/');
    if first.starts_with("ssm") || first.starts_with("aws") {
        return Err(
            "names may not begin with aws or ssm, with or without a leading / (AWS reserves them)"
                .into(),
        );
    }
    Ok(())
}

/// What the templates need to know about an AMI.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub arch: String,
    pub tags: Vec<(String, String)>,
}

/// Reads an AMI's facts; it must exist and be available.
pub(crate) async fn describe(
    ec2: &aws_sdk_ec2::Client,
    image: &RegionalImage,
) -> Result<ImageFacts> {
    let (region, id) = (&image.region, &image.image_id);
    let found = crate::aws::ami::describe_image(ec2, region, id).await?;
    if found.state() != Some(&ImageState::Available) {
        return Err(Error::Invalid(format!(
            "AMI {id} in {region} is {}, not available; publish it once it is",
            found.state().map(|s| s.as_str()).unwrap_or("in no state")
        )));
    }
    let missing = |field| Error::missing(Op::Ec2DescribeImages, field);
    Ok(ImageFacts {
        region: region.clone(),
        image_id: id.clone(),
        name: found.name().ok_or_else(|| missing("Name"))?.to_string(),
        arch: found
            .architecture()
            .ok_or_else(|| missing("Architecture"))?
            .as_str()
            .to_string(),
        tags: found
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
    })
}

/// One parameter to write (or leave, when it already holds the AMI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub region: String,
    pub parameter: String,
    pub image_id: String,
    /// Its value now, if it exists.
    pub current: Option<String>,
}

impl Planned {
    /// Whether the parameter does not hold its AMI yet: `write` puts it.
    pub(crate) fn to_write(&self) -> bool {
        self.current.as_deref() != Some(self.image_id.as_str())
    }

    /// The PutParameter `write` makes for it, for the preflight and `--dry-run`.
    pub(crate) fn call(&self) -> crate::aws::calls::Call {
        let resource = vec![crate::aws::calls::Resource::Parameter(
            self.parameter.clone(),
        )];
        crate::aws::calls::Call::new(Op::SsmPutParameter, &self.region, resource)
    }
}

/// Renders every template for one AMI and checks each parameter: a different current value
/// only with `overwrite`.
pub(crate) async fn plan(
    ssm: &aws_sdk_ssm::Client,
    image: &ImageFacts,
    templates: &[Template],
    overwrite: bool,
) -> Result<Vec<Planned>> {
    let mut planned = vec![];
    for template in templates {
        let parameter = template.render(image)?;
        let current = read(ssm, &parameter, &image.region)
            .await?
            .map(|(value, _)| value);
        if let Some(value) = &current {
            if *value != image.image_id && !overwrite {
                return Err(Error::Invalid(format!(
                    "parameter {parameter} in {} already holds {value}, not {}; pass --overwrite to replace it",
                    image.region, image.image_id
                )));
            }
        }
        planned.push(Planned {
            region: image.region.clone(),
            parameter,
            image_id: image.image_id.clone(),
            current,
        });
    }
    Ok(planned)
}

/// Two AMIs in one region must not claim the same parameter.
pub(crate) fn check_conflicts(planned: &[Planned]) -> Result<()> {
    for (i, a) in planned.iter().enumerate() {
        if let Some(b) = planned[i + 1..].iter().find(|b| {
            b.region == a.region && b.parameter == a.parameter && b.image_id != a.image_id
        }) {
            return Err(Error::Invalid(format!(
                "both {} and {} would be written to {} in {}; add {{name}} or {{arch}} to --parameter",
                a.image_id, b.image_id, a.parameter, a.region
            )));
        }
    }
    Ok(())
}

/// A parameter after `write`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Written {
    pub region: String,
    pub parameter: String,
    pub ami: String,
    /// `created`, `updated` or `unchanged`.
    pub status: &'static str,
    /// The parameter's version after the write (absent when unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// Writes one region's parameters, one at a time and `PUT_INTERVAL` apart; each is read back
/// until it holds its AMI (within `validation`), since SSM checks an `aws:ec2:image` value
/// only after PutParameter answered and, when the check fails, writes nothing ("the
/// PutParameter operation will return success, but the asynchronous validation will fail
/// and the parameter will not be created or updated" — PutParameter API reference).
pub(crate) async fn write(
    ssm: &aws_sdk_ssm::Client,
    planned: &[Planned],
    validation: Duration,
) -> Result<Vec<Written>> {
    let mut written = vec![];
    let mut first = true;
    for p in planned {
        if !p.to_write() {
            written.push(Written {
                region: p.region.clone(),
                parameter: p.parameter.clone(),
                ami: p.image_id.clone(),
                status: "unchanged",
                version: None,
            });
            continue;
        }
        if !first {
            tokio::time::sleep(PUT_INTERVAL).await;
        }
        first = false;
        let context = format!("writing parameter {} in {}", p.parameter, p.region);
        let version = match ssm
            .put_parameter()
            .name(&p.parameter)
            .value(&p.image_id)
            .r#type(ParameterType::String)
            .data_type(DATA_TYPE)
            .overwrite(p.current.is_some())
            .send()
            .await
        {
            Ok(out) => out.version(),
            Err(e) => match aws(Op::SsmPutParameter, context, e) {
                // The first attempt was carried out and its answer lost, so the SDK's retry
                // finds the parameter it created: done, if it holds our AMI.
                err if err.code() == Some("ParameterAlreadyExists") => {
                    match read(ssm, &p.parameter, &p.region).await? {
                        Some((value, version)) if value == p.image_id => version,
                        _ => return Err(err),
                    }
                }
                err => return Err(err),
            },
        };
        let version = held(ssm, p, version, validation).await?;
        tracing::info!("{}: {} = {}", p.region, p.parameter, p.image_id);
        written.push(Written {
            region: p.region.clone(),
            parameter: p.parameter.clone(),
            ami: p.image_id.clone(),
            status: if p.current.is_some() {
                "updated"
            } else {
                "created"
            },
            version: Some(version),
        });
    }
    Ok(written)
}

/// Reads `p` back until it holds its AMI; its version then. SSM's check of the AMI runs
/// after the write answered: until it passes, a read shows what was there before.
async fn held(
    ssm: &aws_sdk_ssm::Client,
    p: &Planned,
    written: i64,
    validation: Duration,
) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + validation;
    let mut pause = Duration::from_millis(200);
    loop {
        match read(ssm, &p.parameter, &p.region).await? {
            Some((value, version)) if value == p.image_id && version >= written => {
                return Ok(version)
            }
            _ if tokio::time::Instant::now() + pause > deadline => {
                return Err(Error::failed(
                    format!("writing parameter {} in {}", p.parameter, p.region),
                    ErrorKind::Other,
                    None,
                    format!(
                        "SSM accepted the write, but after {}s the parameter still does not hold {}: SSM's asynchronous check of the AMI failed, so the parameter was not {} (the AMI must exist in {} and be available to this account; rerun once it is)",
                        validation.as_secs(),
                        p.image_id,
                        if p.current.is_some() { "updated" } else { "created" },
                        p.region
                    ),
                ))
            }
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A parameter's value and version; `None` when there is no such parameter.
pub(crate) async fn read(
    ssm: &aws_sdk_ssm::Client,
    parameter: &str,
    region: &str,
) -> Result<Option<(String, i64)>> {
    let context = format!("reading parameter {parameter} in {region}");
    match ssm.get_parameter().name(parameter).send().await {
        Ok(out) => Ok(out
            .parameter()
            .and_then(|p| Some((p.value()?.to_owned(), p.version())))),
        Err(e) => match aws(Op::SsmGetParameter, context, e) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(None),
            err => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ImageFacts {
        ImageFacts {
            region: "eu-west-1".into(),
            image_id: "ami-0123".into(),
            name: "os-1.0".into(),
            arch: "x86_64".into(),
            tags: vec![("stream".into(), "stable".into())],
        }
    }

    #[test]
    fn templates_render() {
        let t = Template::parse("/os/{tag:stream}/{arch}/{region}/{name}").unwrap();
        assert_eq!(
            t.render(&facts()).unwrap(),
            "/os/stable/x86_64/eu-west-1/os-1.0"
        );
        let err = Template::parse("/os/{version}").unwrap_err().to_string();
        assert!(err.contains("unknown placeholder {version}"), "{err}");
        assert!(Template::parse("/os/{arch").is_err());
        assert!(Template::parse("/os/arch}").is_err());
        let err = Template::parse("/os/{tag:missing}")
            .unwrap()
            .render(&facts())
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no tag \"missing\""), "{err}");
    }

    #[test]
    fn parameter_names() {
        assert!(validate_parameter_name("/aws/service/os/stable").is_err());
        validate_parameter_name("os-latest").unwrap();
        assert!(validate_parameter_name("os latest").is_err());
        assert!(validate_parameter_name("os/latest").is_err());
        assert!(validate_parameter_name("/ssm/x").is_err());
        assert!(validate_parameter_name("awsthing").is_err());
        assert!(validate_parameter_name("/a//b").is_err());
        assert!(validate_parameter_name("/AWS/service/x").is_err());
        assert!(validate_parameter_name("/awsome/x").is_err());
        assert!(validate_parameter_name("/os/aws").is_ok());
    }

    #[test]
    fn conflicts() {
        let p = |ami: &str| Planned {
            region: "us-east-1".into(),
            parameter: "/os/latest".into(),
            image_id: ami.into(),
            current: None,
        };
        check_conflicts(&[p("ami-1"), p("ami-1")]).unwrap();
        assert!(check_conflicts(&[p("ami-1"), p("ami-2")]).is_err());
    }
}
