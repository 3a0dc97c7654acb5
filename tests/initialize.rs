//! `imgpub aws initialize` and the shared credential loader, end to end: the real binary
//! against the local stand-in, results read back through S3 and IAM.

mod common;

use common::{write_file, Standin, ACCOUNT};
use serde_json::{json, Value};

/// IAM hands policy documents back URL-encoded (moto does not); accept both.
fn policy_json(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| {
        serde_json::from_str(&urlencoding::decode(raw).unwrap()).expect("policy is JSON")
    })
}

fn expected_trust(partition: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "vmie.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"sts:Externalid": "vmimport", "aws:SourceAccount": ACCOUNT},
                "ArnLike": {"aws:SourceArn": format!("arn:{partition}:vmie:*:{ACCOUNT}:*")}
            }
        }]
    })
}

fn import_statement(bucket: &str) -> Value {
    json!({
        "Effect": "Allow",
        "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
        "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
        "Condition": {"StringEquals": {"s3:ResourceAccount": ACCOUNT}}
    })
}

fn ec2_statement() -> Value {
    json!({
        "Effect": "Allow",
        "Action": ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage", "ec2:Describe*"],
        "Resource": "*"
    })
}

async fn bucket_location(standin: &Standin, bucket: &str) -> String {
    let out = standin
        .s3("us-east-1")
        .get_bucket_location()
        .bucket(bucket)
        .send()
        .await
        .expect("bucket exists");
    out.location_constraint()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default()
}

async fn role_documents(standin: &Standin, role: &str) -> (Value, Value) {
    let iam = standin.iam();
    let got = iam
        .get_role()
        .role_name(role)
        .send()
        .await
        .expect("role exists");
    let trust = policy_json(got.role().unwrap().assume_role_policy_document().unwrap());
    let inline = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(role)
        .send()
        .await
        .expect("inline policy exists");
    (trust, policy_json(inline.policy_document()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn us_east_1_creates_bucket_and_role_with_exact_policies() {
    let standin = Standin::start();
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-east-1",
            "--bucket",
            "images-use1",
        ])
        .run();
    let out = run.json();
    assert_eq!(out["bucket"], "images-use1");
    assert_eq!(out["region"], "us-east-1");
    assert_eq!(
        out["role_arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/vmimport")
    );
    assert_eq!(
        strings(&out["created"]),
        ["bucket", "role", "trust-policy", "role-policy", "lifecycle"]
    );
    assert_eq!(out["changed"], true);
    assert_eq!(out["status"], "changed");

    // us-east-1 buckets have no LocationConstraint.
    assert_eq!(bucket_location(&standin, "images-use1").await, "");
    let (trust, inline) = role_documents(&standin, "vmimport").await;
    assert_eq!(trust, expected_trust("aws"));
    assert_eq!(
        inline,
        json!({"Version": "2012-10-17", "Statement": [import_statement("images-use1"), ec2_statement()]})
    );
}

#[tokio::test]
async fn eu_west_1_with_export_bucket_kms_and_license_manager() {
    let standin = Standin::start();
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let run = standin
        .imgpub()
        .args([
            "aws",
            "--region",
            "eu-west-1",
            "initialize",
            "--bucket",
            "s3://images-euw1",
        ])
        .args([
            "--export-bucket",
            "exports-euw1",
            "--kms-key",
            key,
            "--license-manager",
        ])
        .run();
    let out = run.json();
    assert_eq!(out["region"], "eu-west-1");
    assert_eq!(bucket_location(&standin, "images-euw1").await, "eu-west-1");

    let (trust, inline) = role_documents(&standin, "vmimport").await;
    assert_eq!(trust, expected_trust("aws"));
    let expected = json!({"Version": "2012-10-17", "Statement": [
        import_statement("images-euw1"),
        {
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:GetBucketAcl"],
            "Resource": ["arn:aws:s3:::exports-euw1", "arn:aws:s3:::exports-euw1/*"],
            "Condition": {"StringEquals": {"s3:ResourceAccount": ACCOUNT}}
        },
        ec2_statement(),
        {
            "Effect": "Allow",
            "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
            "Resource": key
        },
        {
            "Effect": "Allow",
            "Action": ["license-manager:GetLicenseConfiguration", "license-manager:UpdateLicenseSpecificationsForResource", "license-manager:ListLicenseSpecificationsForResource"],
            "Resource": "*"
        }
    ]});
    assert_eq!(inline, expected);
}

#[tokio::test]
async fn rerun_changes_nothing_and_drift_is_repaired() {
    let standin = Standin::start();
    let init = || {
        standin
            .imgpub()
            .args([
                "aws",
                "initialize",
                "--region",
                "eu-west-1",
                "--bucket",
                "images-drift",
                "-v",
            ])
            .run()
    };
    init().json();

    let second = init();
    let out = second.json();
    assert_eq!(out["changed"], false);
    assert_eq!(out["status"], "unchanged");
    assert_eq!(out["created"], json!([]));
    assert_eq!(out["repaired"], json!([]));
    assert_eq!(
        strings(&out["already_fine"]),
        ["bucket", "role", "trust-policy", "role-policy", "lifecycle"]
    );
    assert!(
        second.stderr.contains("initialize: nothing to do"),
        "{}",
        second.stderr
    );

    // An admin narrows the policy and loosens the trust policy by hand.
    let iam = standin.iam();
    let narrowed =
        json!({"Version": "2012-10-17", "Statement": [import_statement("images-drift")]});
    iam.put_role_policy()
        .role_name("vmimport")
        .policy_name("vmimport")
        .policy_document(narrowed.to_string())
        .send()
        .await
        .unwrap();
    let loose = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"}, "Action": "sts:AssumeRole"
    }]});
    iam.update_assume_role_policy()
        .role_name("vmimport")
        .policy_document(loose.to_string())
        .send()
        .await
        .unwrap();

    let third = init();
    let out = third.json();
    assert_eq!(out["changed"], true);
    assert_eq!(strings(&out["repaired"]), ["trust-policy", "role-policy"]);
    assert_eq!(
        strings(&out["already_fine"]),
        ["bucket", "role", "lifecycle"]
    );
    let (trust, inline) = role_documents(&standin, "vmimport").await;
    assert_eq!(trust, expected_trust("aws"));
    assert_eq!(
        inline,
        json!({"Version": "2012-10-17", "Statement": [import_statement("images-drift"), ec2_statement()]})
    );
}

#[tokio::test]
async fn a_trust_that_admits_more_is_repaired_naming_what_went_and_wildcard_grants_are_listed() {
    let standin = Standin::start();
    let init = || {
        standin
            .imgpub()
            .args(["aws", "initialize", "--region", "eu-west-1"])
            .args(["--bucket", "images-trust"])
            .run()
    };
    init().json();
    let (ours, inline) = role_documents(&standin, "vmimport").await;
    // An extra principal in the import statement, and a statement for a foreign account:
    // both let someone other than VM Import/Export assume the role.
    let mut widened = ours["Statement"][0].clone();
    widened["Principal"]["AWS"] = json!("*");
    let partner = json!({"Sid": "Partner", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "sts:AssumeRole"});
    let mut wildcard = inline.clone();
    wildcard["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "AnyBucket", "Effect": "Allow",
        "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
        "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"]
    }));
    let iam = standin.iam();
    iam.put_role_policy()
        .role_name("vmimport")
        .policy_name("vmimport")
        .policy_document(wildcard.to_string())
        .send()
        .await
        .unwrap();
    for (trust, named) in [
        (
            json!({"Version": "2012-10-17", "Statement": [widened]}),
            "statement 1",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": [ours["Statement"][0].clone(), partner]}),
            "Partner",
        ),
    ] {
        iam.update_assume_role_policy()
            .role_name("vmimport")
            .policy_document(trust.to_string())
            .send()
            .await
            .unwrap();
        let run = init();
        let out = run.json();
        assert_eq!(strings(&out["repaired"]), ["trust-policy"], "{out}");
        let removed = strings(&out["trust_removed"]);
        assert_eq!(removed.len(), 1, "{out}");
        assert!(removed[0].starts_with(named), "{out}");
        assert!(run.stderr.contains(named), "{}", run.stderr);
        // The wildcard grant is someone else's statement, listed, and not folded into ours.
        assert_eq!(strings(&out["kept"]), ["AnyBucket"], "{out}");
        let (trust, policy) = role_documents(&standin, "vmimport").await;
        assert_eq!(trust, expected_trust("aws"));
        assert_eq!(policy, wildcard);
    }
    let out = init().json();
    assert_eq!(out["changed"], false, "{out}");
    assert_eq!(out["trust_removed"], json!([]));
}

#[tokio::test]
async fn a_bucket_of_the_expected_name_owned_by_another_account_is_refused() {
    let standin = Standin::start();
    let region = "eu-west-1";
    let squatted = format!("imgpub-{ACCOUNT}-{region}");
    // Someone else makes the predictable default bucket first; the stand-in, like a bucket
    // policy open to all, lets every account read and write it.
    let squatter = standin.s3_of_account(region, "999988887777").await;
    squatter
        .create_bucket()
        .bucket(&squatted)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        )
        .send()
        .await
        .unwrap();
    standin.reset_requests();
    let init = standin
        .imgpub()
        .args(["aws", "initialize", "--region", region])
        .run();
    assert_eq!(init.code, 2, "{}", init.stderr);
    let line = init.error_line();
    assert!(
        line.contains(&squatted)
            && line.contains("another AWS account")
            && line.contains("--bucket"),
        "{line}"
    );
    let counts = standin.counts();
    assert!(counts.get("iam.CreateRole").is_none(), "{counts}");

    // A publisher pointed at it sends nothing there.
    standin.initialize(region, "images-own");
    let dir = common::tempdir::TempDir::new();
    let file = common::make_raw(dir.path(), "os.raw", 8, 2, 5);
    standin.reset_requests();
    let run = standin
        .imgpub()
        .args(["aws", "upload", "--region", region])
        .args(["--bucket", &format!("s3://{squatted}/ci")])
        .arg_path("--file", &file)
        .args(["--ami-name", "os-squat"])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.error_line().contains("another AWS account"),
        "{}",
        run.stderr
    );
    let counts = standin.counts();
    for call in [
        "s3.CreateMultipartUpload",
        "s3.UploadPart",
        "s3.PutObject",
        "ec2.ImportSnapshot",
    ] {
        assert!(counts.get(call).is_none(), "{call}: {counts}");
    }
    let listed = squatter
        .list_objects_v2()
        .bucket(&squatted)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0));
}

#[tokio::test]
async fn bucket_in_another_region_is_a_clear_error() {
    let standin = Standin::start();
    standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "eu-west-1",
            "--bucket",
            "images-moved",
        ])
        .run()
        .json();
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-west-2",
            "--bucket",
            "images-moved",
        ])
        .run();
    let err = run.error_line();
    assert!(
        err.contains("bucket images-moved already exists in region eu-west-1")
            && err.contains("--region eu-west-1"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_input_fails_before_any_side_effect() {
    let standin = Standin::start();
    for (args, want) in [
        (
            vec!["--bucket", "Bad_Bucket"],
            "bucket name \"Bad_Bucket\" is not valid",
        ),
        (
            vec!["--bucket", "s3://images/prefix"],
            "it has a key prefix",
        ),
        (
            vec!["--bucket", "ok-bucket", "--role-name", "bad role"],
            "role name \"bad role\" is not valid",
        ),
        (
            vec!["--bucket", "ok-bucket", "--kms-key", "my-key"],
            "is not a KMS key ARN",
        ),
    ] {
        let run = standin
            .imgpub()
            .args(["aws", "initialize", "--region", "us-east-1"])
            .args(&args)
            .run();
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let err = run.error_line();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "moon-base",
            "--bucket",
            "ok-bucket",
        ])
        .run();
    assert_eq!(run.code, 2);
    assert!(run
        .error_line()
        .contains("\"moon-base\" is not a region name"));

    // Nothing was created by any of those.
    let roles = standin.iam().list_roles().send().await.unwrap();
    assert!(roles.roles().is_empty(), "{:?}", roles.roles());
    let buckets = standin.s3("us-east-1").list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty());
}

#[tokio::test]
async fn policy_asks_aws_only_who_is_calling() {
    let standin = Standin::start();
    let run = standin
        .imgpub()
        .args(["aws", "policy", "--region", "eu-west-1"])
        .run();
    let doc = run.json_document();
    // The caller's account fills the ARNs; nothing else was asked.
    assert!(
        doc.to_string()
            .contains(&format!("arn:aws:s3:::imgpub-{ACCOUNT}-eu-west-1/*")),
        "{doc}"
    );
    assert_eq!(standin.counts(), json!({"sts.GetCallerIdentity": 1}));
}

/// Creates an IAM user with an admin policy and returns its access key pair.
async fn admin_user(standin: &Standin, name: &str) -> (String, String) {
    let admin = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
    common::user_with(standin, name, &admin).await
}

#[tokio::test]
async fn credentials_file_with_profile() {
    let standin = Standin::start();
    let (key, secret) = admin_user(&standin, "ci-user").await;
    let dir = common::tempdir::TempDir::new();
    let file = write_file(
        dir.path(),
        "credentials",
        &format!(
            "[default]\naws_access_key_id = AKIAWRONGDEFAULT0000\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        ),
    );
    standin.enforce_auth();
    // The file wins over the environment's (now invalid) keys, and -d shows who we are.
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-east-1",
            "--bucket",
            "images-cf",
        ])
        .arg_path("--credentials-file", &file)
        .args(["--profile", "ci", "-d"])
        .secret(&secret)
        .run();
    run.json();
    assert!(
        run.stderr
            .contains(&format!("arn:aws:iam::{ACCOUNT}:user/ci-user")),
        "{}",
        run.stderr
    );

    // The same file's default profile has bad keys: one line naming the source.
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-east-1",
            "--bucket",
            "images-cf",
        ])
        .arg_path("--credentials-file", &file)
        .secret(&secret)
        .run();
    assert_eq!(run.code, 1);
    let err = run.error_line();
    assert!(
        err.contains(&format!("profile \"default\" in {}", file.display()))
            && err.contains("InvalidClientTokenId")
            && err.contains("us-east-1"),
        "{err}"
    );

    // A missing file is named before anything is sent.
    let run = standin
        .imgpub()
        .args(["aws", "initialize", "--region", "us-east-1"])
        .args(["--credentials-file", "/nonexistent/credentials"])
        .run();
    assert_eq!(run.code, 2);
    assert!(run
        .error_line()
        .contains("credentials file /nonexistent/credentials does not exist"));
}

#[tokio::test]
async fn bad_environment_credentials_give_one_line_and_no_secret() {
    let standin = Standin::start();
    admin_user(&standin, "someone").await;
    standin.enforce_auth();
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "eu-west-1",
            "--bucket",
            "images-bad",
            "--log-level",
            "TRACE",
        ])
        .run();
    assert_eq!(run.code, 1);
    let err = run.error_line();
    assert!(
        err.contains("could not verify AWS credentials from environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in region eu-west-1")
            && err.contains("InvalidClientTokenId"),
        "{err}"
    );
    // The preflight stopped it: nothing was created.
    assert!(!standin
        .counts()
        .as_object()
        .unwrap()
        .contains_key("s3.CreateBucket"));
}

#[tokio::test]
async fn assume_role_with_external_id() {
    let standin = Standin::start();
    let iam = standin.iam();
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "release-pipeline-7"}}
    }]});
    let role = iam
        .create_role()
        .role_name("publisher")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let arn = role.role().unwrap().arn().to_string();

    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-east-1",
            "--bucket",
            "images-ar",
            "-v",
        ])
        .args(["--role-arn", &arn, "--external-id", "release-pipeline-7"])
        .run();
    run.json();
    assert!(
        run.stderr.contains(&format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/publisher/imgpub"
        )),
        "{}",
        run.stderr
    );

    // The role from the environment; the session names the CI job (CloudTrail tells jobs
    // apart), or what --role-session-name says.
    for (extra, session) in [
        (vec![], "imgpub-4242"),
        (vec!["--role-session-name", "release-7"], "release-7"),
    ] {
        let run = standin
            .imgpub()
            .env("IMGPUB_ROLE_ARN", &arn)
            .env("IMGPUB_EXTERNAL_ID", "release-pipeline-7")
            .env("GITHUB_RUN_ID", "4242")
            .args([
                "aws",
                "initialize",
                "--region",
                "us-east-1",
                "--bucket",
                "images-ar",
                "-v",
            ])
            .args(&extra)
            .run();
        run.json();
        assert!(
            run.stderr.contains(&format!(
                "arn:aws:sts::{ACCOUNT}:assumed-role/publisher/{session} "
            )),
            "{}",
            run.stderr
        );
    }

    // A wrong external id is refused by STS, and the error names the role.
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-east-1",
            "--bucket",
            "images-ar",
        ])
        .args(["--role-arn", &arn, "--external-id", "wrong"])
        .run();
    assert_eq!(run.code, 1);
    let err = run.error_line();
    assert!(
        err.contains(&format!("role {arn}")) && err.contains("AccessDenied"),
        "{err}"
    );

    // --external-id without --role-arn is a usage error.
    let run = standin
        .imgpub()
        .args(["aws", "initialize", "--external-id", "x"])
        .run();
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--role-arn"), "{}", run.stderr);
}

/// The days after which imgpub's lifecycle rule aborts incomplete uploads in `bucket`.
async fn abort_rule(standin: &Standin, bucket: &str) -> Option<i32> {
    let rules = standin
        .s3("us-east-1")
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let rule = rules
        .rules()
        .iter()
        .find(|r| r.id() == Some("imgpub-abort-incomplete-uploads"))?;
    rule.abort_incomplete_multipart_upload()
        .and_then(|a| a.days_after_initiation())
}

/// Imports read the image as the role: with the stand-in enforcing IAM, an import succeeds
/// only when the role's policy grants that bucket.
#[tokio::test]
async fn a_second_region_adds_its_bucket_and_an_admins_statement_is_kept() {
    let standin = Standin::start();
    standin.enforce_iam();
    let init = |region: &str, bucket: &str| {
        standin
            .imgpub()
            .args([
                "aws",
                "initialize",
                "--region",
                region,
                "--bucket",
                bucket,
                "-v",
            ])
            .run()
    };
    init("us-east-1", "images-use1").json();
    init("eu-west-1", "images-euw1").json();
    let (_, inline) = role_documents(&standin, "vmimport").await;
    let text = inline.to_string();
    for bucket in ["images-use1", "images-euw1"] {
        assert!(text.contains(&format!("arn:aws:s3:::{bucket}/*")), "{text}");
    }

    // An import from each region's bucket reads its object as the role.
    let dir = common::tempdir::TempDir::new();
    let file = common::make_raw(dir.path(), "os.raw", 8, 2, 5);
    for (region, bucket) in [("us-east-1", "images-use1"), ("eu-west-1", "images-euw1")] {
        let run = standin
            .imgpub()
            .args(["aws", "import-snapshot", "--region", region])
            .args(["--bucket", &format!("s3://{bucket}/ci"), "--name", region])
            .arg_path("--file", &file)
            .run();
        assert!(run.json()["SnapshotID"]
            .as_str()
            .unwrap()
            .starts_with("snap-"));
    }
    // A bucket the role does not grant: the import reads nothing.
    standin
        .s3("us-east-1")
        .create_bucket()
        .bucket("not-granted")
        .send()
        .await
        .unwrap();
    let run = standin
        .imgpub()
        .args(["aws", "import-snapshot", "--region", "us-east-1"])
        .args(["--bucket", "s3://not-granted/ci", "--name", "denied"])
        .arg_path("--file", &file)
        .run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.error_line().contains("Access Denied"), "{}", run.stderr);

    // An admin's statement survives a third initialize, which says so.
    let extra = json!({"Sid": "AdminExtra", "Effect": "Allow", "Action": "s3:GetObject",
                       "Resource": "arn:aws:s3:::shared-artifacts/*"});
    let mut edited = inline.clone();
    edited["Statement"]
        .as_array_mut()
        .unwrap()
        .push(extra.clone());
    standin
        .iam()
        .put_role_policy()
        .role_name("vmimport")
        .policy_name("vmimport")
        .policy_document(edited.to_string())
        .send()
        .await
        .unwrap();
    let third = init("us-east-1", "images-use1");
    let out = third.json();
    assert_eq!(out["kept"], json!(["AdminExtra"]));
    assert_eq!(out["changed"], false, "{out}");
    assert!(third.stderr.contains("AdminExtra"), "{}", third.stderr);
    let (_, after) = role_documents(&standin, "vmimport").await;
    assert!(
        after["Statement"].as_array().unwrap().contains(&extra),
        "{after}"
    );
    assert!(after.to_string().contains("images-euw1"), "{after}");

    // The bucket aborts incomplete uploads after 7 days; 0 leaves the lifecycle alone.
    assert_eq!(abort_rule(&standin, "images-use1").await, Some(7));
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "us-east-1",
            "--bucket",
            "images-use1",
        ])
        .args(["--abort-incomplete-days", "3", "--dry-run"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let calls: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 1, "{}", run.stdout);
    assert_eq!(calls[0]["op"], "s3:PutBucketLifecycleConfiguration");
    // The dry run changed nothing.
    assert_eq!(abort_rule(&standin, "images-use1").await, Some(7));
}

/// CreateRole carried out but its answer lost: the SDK's retry meets the role it created
/// (EntityAlreadyExists); initialize finishes it instead of failing.
#[tokio::test]
async fn a_role_whose_creation_answer_was_lost_is_finished() {
    let standin = Standin::start();
    standin.fault(r#"{"action": "CreateRole", "status": 500, "after": true, "count": 1}"#);
    // Exits 0 (Standin::initialize checks it).
    standin.initialize("us-east-1", "lost-answer");
    let iam = standin.iam();
    let role = iam.get_role().role_name("vmimport").send().await.unwrap();
    let trust = urlencoding::decode(role.role().unwrap().assume_role_policy_document().unwrap())
        .unwrap()
        .into_owned();
    assert!(trust.contains("vmie.amazonaws.com"), "{trust}");
    let policy = iam
        .get_role_policy()
        .role_name("vmimport")
        .policy_name("vmimport")
        .send()
        .await
        .unwrap();
    assert!(policy.policy_document().contains("lost-answer"));
    assert_eq!(
        standin.counts()["iam.CreateRole"],
        2,
        "{}",
        standin.counts()
    );
}

/// IAM is eventually consistent (IAM User Guide, "Changes that I make are not always
/// immediately visible"): with the stand-in keeping each new role unknown to reads, and
/// unusable, for 15 s, `initialize` still finishes, and a rerun at once (which cannot see
/// the role yet, so tries to create it and is told it exists) finishes too, with one role
/// holding the bucket's statement.
#[tokio::test]
async fn initialize_and_its_rerun_go_through_while_the_new_role_is_not_yet_visible() {
    let standin = Standin::start();
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"iam_consistency_seconds": 15}"#),
    );
    let init = || {
        standin
            .imgpub()
            .args([
                "aws",
                "initialize",
                "--region",
                "us-east-1",
                "--bucket",
                "young",
            ])
            .run()
    };
    let first = init();
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = init();
    assert_eq!(again.code, 0, "{}", again.stderr);
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"iam_consistency_seconds": 0}"#),
    );
    let roles = standin.iam().list_roles().send().await.unwrap();
    let names: Vec<&str> = roles.roles().iter().map(|r| r.role_name()).collect();
    assert_eq!(names, ["vmimport"]);
    let (_, inline) = role_documents(&standin, "vmimport").await;
    assert!(
        inline.to_string().contains("arn:aws:s3:::young/*"),
        "{inline}"
    );
}
