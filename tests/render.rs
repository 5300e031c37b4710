//! `stencil render`: the one-shot job.

use crate::support::Test;

#[test]
fn renders_env_to_a_file() {
    Test::new()
        .file("app.conf.j2", "host={{ env.HOST }}\nport={{ env.PORT | default('8080') }}\n")
        .env("HOST", "db.internal")
        .args(["render", "-t", "app.conf.j2:app.conf"])
        .run()
        .success()
        .file_is("app.conf", "host=db.internal\nport=8080\n")
        .no_staged_files(".");
}

#[test]
fn renders_to_stdout_without_dest() {
    Test::new()
        .file("a.j2", "{% for i in range(3) %}\n{{ i }}\n{% endfor %}\n")
        .args(["render", "-t", "a.j2"])
        .run()
        .success()
        .stdout_is("0\n1\n2\n");
}
