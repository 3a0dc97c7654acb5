//! Which AMI in which region a command acts on: `--image ami-…` (the command's region),
//! `--image REGION=ami-…`, or the JSON lines `copy-regions` prints, read back with
//! `--images-from FILE` (`-` for stdin) so release jobs can pipe one step into the next.

use serde::Serialize;

use crate::aws::config::validate_region;
use crate::error::{Error, Result};

/// An AMI and the region it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RegionalImage {
    pub region: String,
    pub image_id: String,
}

impl std::fmt::Display for RegionalImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.image_id, self.region)
    }
}

pub(crate) fn check_image_id(flag: &str, id: &str) -> Result<()> {
    check_id(flag, id, "ami-", "an AMI id")
}

/// `snap-` and hex digits, as EC2 makes snapshot ids.
pub(crate) fn check_snapshot_id(flag: &str, id: &str) -> Result<()> {
    check_id(flag, id, "snap-", "a snapshot id")
}

/// EC2's ids: the prefix, then 8 or 17 hex digits (a typo such as `ami-zzz` is refused
/// before any lookup).
fn check_id(flag: &str, id: &str, prefix: &str, what: &str) -> Result<()> {
    let hex = id.strip_prefix(prefix).unwrap_or_default();
    if !matches!(hex.len(), 8 | 17) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{flag} {id:?} is not {what} ({prefix} and 8 or 17 hex digits)"
        )));
    }
    Ok(())
}

/// Parses one `--image` value: its region, if it names one, and the AMI id.
fn parse_arg(arg: &str) -> Result<(Option<String>, String)> {
    let (region, id) = match arg.split_once('=') {
        Some((region, id)) => {
            validate_region(region)?;
            (Some(region.to_string()), id)
        }
        None => (None, arg),
    };
    check_image_id("--image", id)?;
    Ok((region, id.to_string()))
}

/// Parses one `--image` value; a bare id belongs to `default_region`.
pub fn parse_image_arg(arg: &str, default_region: &str) -> Result<RegionalImage> {
    let (region, image_id) = parse_arg(arg)?;
    Ok(RegionalImage {
        region: region.unwrap_or_else(|| default_region.to_string()),
        image_id,
    })
}

/// Parses what `copy-regions` printed: one `{"REGION":{"ami":"ami-…",…}}` per line; blank
/// lines are skipped. `origin` names the input in errors.
pub fn parse_copy_lines(text: &str, origin: &str) -> Result<Vec<RegionalImage>> {
    let mut images = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            Error::Invalid(format!(
                "{origin} line {}: {why}; expected copy-regions output like {{\"us-west-2\":{{\"ami\":\"ami-…\"}}}}",
                n + 1
            ))
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let object = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
        for (region, ids) in object {
            validate_region(region).map_err(|e| bad(&e.to_string()))?;
            let id = ids
                .get("ami")
                .and_then(|a| a.as_str())
                .ok_or_else(|| bad(&format!("no \"ami\" for {region}")))?;
            check_image_id(&format!("{origin} line {}:", n + 1), id)?;
            images.push(RegionalImage {
                region: region.clone(),
                image_id: id.to_string(),
            });
        }
    }
    Ok(images)
}

/// Reads `--images-from` (a file, or `-` for stdin).
pub(crate) fn read_copy_lines(path: &str) -> Result<Vec<RegionalImage>> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::Io {
            context: "reading --images-from from stdin".into(),
            source: e,
        })?
    } else {
        // A file that is not there is bad input: nothing was done yet.
        std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read --images-from {path} ({e}): pass the file copy-regions' output was saved to, or - to read it from stdin"
            ))
        })?
    };
    parse_copy_lines(&text, path)
}

/// `--image` and `--images-from`, as given.
#[derive(Debug, Clone, Default)]
pub struct ImageSelection {
    pub images: Vec<String>,
    pub images_from: Option<String>,
}

/// The AMIs a command was given, read and checked; a bare `ami-…` waits for the command's
/// region, known once the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected(Vec<(Option<String>, String)>);

impl ImageSelection {
    /// Parses every `--image` and reads `--images-from` (it may be stdin: this blocks). At
    /// least one AMI is needed.
    pub fn read(&self) -> Result<Selected> {
        let mut all: Vec<(Option<String>, String)> = self
            .images
            .iter()
            .map(|a| parse_arg(a))
            .collect::<Result<_>>()?;
        if let Some(path) = &self.images_from {
            let read = read_copy_lines(path)?;
            all.extend(read.into_iter().map(|i| (Some(i.region), i.image_id)));
        }
        if all.is_empty() {
            return Err(Error::Invalid(
                "no AMI given: pass --image ami-… (or REGION=ami-…), or --images-from FILE with copy-regions output".into(),
            ));
        }
        Ok(Selected(all))
    }
}

impl Selected {
    /// Every AMI with its region (a bare id's is `default_region`), in order, without repeats.
    pub fn in_region(self, default_region: &str) -> Vec<RegionalImage> {
        let mut seen = std::collections::HashSet::new();
        self.0
            .into_iter()
            .map(|(region, image_id)| RegionalImage {
                region: region.unwrap_or_else(|| default_region.to_string()),
                image_id,
            })
            .filter(|i| seen.insert(i.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_args() {
        assert_eq!(
            parse_image_arg("ami-0abc1234", "us-east-1").unwrap(),
            RegionalImage {
                region: "us-east-1".into(),
                image_id: "ami-0abc1234".into()
            }
        );
        assert_eq!(
            parse_image_arg("eu-west-1=ami-12345678", "us-east-1")
                .unwrap()
                .region,
            "eu-west-1"
        );
        assert!(parse_image_arg("snap-12", "us-east-1").is_err());
        assert!(parse_image_arg("eu_west=ami-12345678", "us-east-1").is_err());
        // Typos are refused before any lookup: EC2's ids have 8 or 17 hex digits.
        for typo in ["ami-zzz", "ami-123", "ami-0123456789abcdef", "ami-"] {
            let err = parse_image_arg(typo, "us-east-1").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{typo}");
            assert!(err.to_string().contains("8 or 17 hex digits"), "{err}");
        }
        assert!(parse_image_arg("ami-0123456789abcdef0", "us-east-1").is_ok());
    }

    #[test]
    fn copy_lines() {
        let text = "{\"us-west-2\":{\"ami\":\"ami-00000001\",\"snapshot\":\"snap-1\"}}\n\n{\"eu-west-1\":{\"ami\":\"ami-00000002\",\"snapshot\":\"snap-2\"}}\n";
        let images = parse_copy_lines(text, "out.json").unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[1].region, "eu-west-1");
        let err = parse_copy_lines("{\"us-west-2\":{}}", "out.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("out.json line 1"), "{err}");
        assert!(parse_copy_lines("nope", "-").is_err());
    }

    #[test]
    fn selection_needs_one_and_drops_repeats() {
        assert!(ImageSelection::default().read().is_err());
        let selection = ImageSelection {
            images: vec![
                "ami-0000000a".to_string(),
                "us-east-1=ami-0000000a".to_string(),
            ],
            images_from: None,
        };
        assert_eq!(selection.read().unwrap().in_region("us-east-1").len(), 1);
        let bad = ImageSelection {
            images: vec!["eu_west=ami-0000000a".to_string()],
            images_from: None,
        };
        assert!(bad.read().is_err());
    }
}
