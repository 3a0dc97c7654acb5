//! Image inspection against images qemu-img made: the virtual size must be qemu-img's, and
//! the formats AWS cannot import must be named with the fix.

mod common;

use std::path::Path;

use common::{make_raw, qemu_convert, qemu_virtual_size, tempdir::TempDir};
use imgpub::testing::image::{check_direct, import_format, inspect, Format};
use imgpub::ObjectFormat;

#[test]
fn virtual_sizes_match_qemu_img() {
    let dir = TempDir::new();
    // Odd sizes too, so rounding mistakes show.
    for (size_mib, data_mib) in [(64, 20), (100, 3), (1, 0)] {
        let raw = make_raw(
            dir.path(),
            &format!("d{size_mib}.raw"),
            size_mib,
            data_mib,
            7,
        );
        let cases: Vec<(&str, &[&str], Format)> = vec![
            (
                "vmdk",
                &["-o", "subformat=streamOptimized"],
                Format::Vmdk {
                    stream_optimized: true,
                },
            ),
            (
                "vmdk",
                &["-o", "subformat=monolithicSparse"],
                Format::Vmdk {
                    stream_optimized: false,
                },
            ),
            ("qcow2", &[], Format::Qcow2),
            (
                "vpc",
                &["-o", "subformat=fixed"],
                Format::Vhd { fixed: true },
            ),
            (
                "vpc",
                &["-o", "subformat=dynamic"],
                Format::Vhd { fixed: false },
            ),
        ];
        for (i, (fmt, opts, want)) in cases.into_iter().enumerate() {
            let out = dir.path().join(format!("d{size_mib}-{i}.{fmt}"));
            qemu_convert(&raw, &out, fmt, opts);
            let info = inspect(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            assert_eq!(info.format, want, "{}", out.display());
            assert_eq!(
                info.virtual_size,
                Some(qemu_virtual_size(&out, fmt)),
                "{}",
                out.display()
            );
        }
        let info = inspect(&raw).unwrap();
        // make_raw writes an MBR boot signature.
        assert_eq!(
            info.format,
            Format::Raw {
                partition_table: true
            }
        );
        assert_eq!(info.virtual_size, Some(qemu_virtual_size(&raw, "raw")));
    }
}

#[test]
fn truncated_vmdk_is_refused() {
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "t.raw", 32, 16, 9);
    let vmdk = dir.path().join("t.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    let data = std::fs::read(&vmdk).unwrap();
    let cut = dir.path().join("cut.vmdk");
    std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
    let err = inspect(&cut).unwrap_err().to_string();
    assert!(
        err.contains("is not a valid VMDK image") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn unimportable_formats_name_the_fix() {
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "u.raw", 8, 1, 3);
    let qcow2 = dir.path().join("u.qcow2");
    qemu_convert(&raw, &qcow2, "qcow2", &[]);
    let err = import_format(&qcow2, &inspect(&qcow2).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is a qcow2 image, which AWS cannot import")
            && err.contains("qemu-img convert -O vmdk -o subformat=streamOptimized"),
        "{err}"
    );
    let vmdk = dir.path().join("u.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    let info = inspect(&vmdk).unwrap();
    assert_eq!(
        import_format(&vmdk, &info, None).unwrap(),
        ObjectFormat::Vmdk
    );
    let err = import_format(&vmdk, &info, Some(ObjectFormat::Raw))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--object-format RAW was given") && err.contains("--object-format VMDK"),
        "{err}"
    );
}

#[test]
fn missing_and_empty_files() {
    let dir = TempDir::new();
    let err = inspect(Path::new("/nonexistent/image.raw"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let empty = common::write_file(dir.path(), "empty.raw", "");
    let err = inspect(&empty).unwrap_err().to_string();
    assert!(err.contains("is empty"), "{err}");
}

/// Runs the `qemu-img convert …` an error suggests, as a person would paste it.
fn run_suggested(err: &str) {
    let start = err.find("`qemu-img convert").expect("a qemu-img line") + 1;
    let line = &err[start..start + err[start..].find('`').unwrap()];
    let out = std::process::Command::new("sh")
        .args(["-c", line])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue #29, item 7: the suggested conversion works as pasted. For a monolithicSparse
/// `m.vmdk` it once wrote `m.vmdk` onto itself (qemu-img fails on its own lock); for qcow2
/// under `--via ebs-direct` it once offered `--via s3`, which refuses qcow2 too.
#[test]
fn the_suggested_conversions_work_as_pasted() {
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "m.raw", 8, 1, 3);
    let sparse = dir.path().join("m.vmdk");
    qemu_convert(&raw, &sparse, "vmdk", &["-o", "subformat=monolithicSparse"]);
    let err = import_format(&sparse, &inspect(&sparse).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("m-converted.vmdk"), "{err}");
    run_suggested(&err);
    let made = dir.path().join("m-converted.vmdk");
    assert_eq!(
        import_format(&made, &inspect(&made).unwrap(), None).unwrap(),
        ObjectFormat::Vmdk
    );

    let qcow2 = dir.path().join("q.qcow2");
    qemu_convert(&raw, &qcow2, "qcow2", &[]);
    let err = check_direct(&qcow2, &inspect(&qcow2).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("--via s3"), "{err}");
    run_suggested(&err);
    let made = dir.path().join("q.raw");
    check_direct(&made, &inspect(&made).unwrap(), None).unwrap();
}
