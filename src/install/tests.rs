//! The install path on real files in temporary directories.

use super::*;

fn request<'a>(dest: &'a Path, content: &'a [u8]) -> Request<'a> {
    Request {
        destination: dest,
        content,
        mode: None,
        owner: None,
        group: None,
        check: None,
        command_timeout: Duration::from_secs(10),
        backup: false,
        create_dirs: false,
        label: "test",
        create_dirs_hint: "set create_dirs = true to create it",
        defer_dir_sync: false,
    }
}

#[test]
fn unchanged_content_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.conf");
    assert_eq!(install(&request(&dest, b"x\n")).unwrap(), Outcome::Written);
    let inode = fs::metadata(&dest).unwrap().ino();
    assert_eq!(
        install(&request(&dest, b"x\n")).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(fs::metadata(&dest).unwrap().ino(), inode);
}

#[test]
fn symlink_target_is_replaced_and_link_kept() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.conf");
    fs::write(&real, "old").unwrap();
    let link = dir.path().join("link.conf");
    std::os::unix::fs::symlink("real.conf", &link).unwrap();
    install(&request(&link, b"new")).unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&real).unwrap(), "new");
}

#[test]
fn mode_defaults_to_the_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.conf");
    fs::write(&dest, "old").unwrap();
    fs::set_permissions(&dest, Permissions::from_mode(0o600)).unwrap();
    install(&request(&dest, b"new")).unwrap();
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn stale_staged_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.conf");
    let stale = dir.path().join(".a.conf.stencil-AbC123");
    let other = dir.path().join(".b.conf.stencil-AbC123");
    fs::write(&stale, "x").unwrap();
    fs::write(&other, "x").unwrap();
    remove_stale(&dest);
    assert!(!stale.exists());
    assert!(other.exists(), "only this destination's staged files go");
}

#[test]
fn restore_puts_back_content_and_mode_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.conf");
    fs::write(&real, "old").unwrap();
    fs::set_permissions(&real, Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.conf");
    std::os::unix::fs::symlink("real.conf", &link).unwrap();
    let mut req = request(&link, b"new");
    req.mode = Some(0o644);
    let (outcome, previous) = install_keeping(&req).unwrap();
    assert_eq!(outcome, Outcome::Written);
    assert_eq!(fs::read_to_string(&real).unwrap(), "new");
    restore(&previous.unwrap()).unwrap();
    assert_eq!(fs::read_to_string(&real).unwrap(), "old");
    assert_eq!(fs::metadata(&real).unwrap().mode() & 0o7777, 0o600);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn restore_removes_a_file_that_did_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.conf");
    let (_, previous) = install_keeping(&request(&dest, b"new")).unwrap();
    restore(&previous.unwrap()).unwrap();
    assert!(!dest.exists());
}
