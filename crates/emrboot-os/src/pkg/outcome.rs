//! What an install transaction did, told from the package database afterwards (not from the
//! exit code: yum 3 skips names no repo has and exits 0) and from what the manager printed about
//! names it could not find.

/// A transaction that left wanted packages uninstalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// The command line, as the log and `plan` show it.
    pub cmd: String,
    /// Its exit status: `status N`, or `status 0` when the manager claimed success.
    pub status: String,
    /// Names the manager said no enabled repository has.
    pub unavailable: Vec<String>,
    /// Wanted names still not installed afterwards (a superset of `unavailable` in practice).
    pub not_installed: Vec<String>,
    /// Names this transaction did install.
    pub installed: Vec<String>,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` exited with {}: ", self.cmd, self.status)?;
        if !self.unavailable.is_empty() {
            write!(
                f,
                "no enabled repository provides {}; ",
                self.unavailable.join(", ")
            )?;
        }
        write!(f, "not installed: {}; ", self.not_installed.join(", "))?;
        if self.installed.is_empty() {
            write!(f, "the transaction installed nothing")
        } else {
            write!(f, "it installed {}", self.installed.join(", "))
        }
    }
}

/// The wanted names that the manager's output says no repository has. Each manager says it
/// its own way:
/// - dnf 4: `No match for argument: NAME`, `Error: Unable to find a match: NAME NAME`;
/// - yum 3: `No package NAME available.`;
/// - apt-get: `E: Unable to locate package NAME`, `E: Package 'NAME' has no installation candidate`.
///
/// Only names from `wanted` are returned, so odd output cannot make up a package.
pub fn unavailable(output: &str, wanted: &[String]) -> Vec<String> {
    let mut said: Vec<&str> = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("No match for argument: ") {
            said.push(rest.trim());
        } else if let Some(i) = line.find("Unable to find a match: ") {
            said.extend(line[i + "Unable to find a match: ".len()..].split_whitespace());
        } else if let Some(rest) = line.strip_prefix("No package ") {
            said.extend(rest.strip_suffix(" available.").map(str::trim));
        } else if let Some(rest) = line.strip_prefix("E: Unable to locate package ") {
            said.push(rest.trim());
        } else if let Some(rest) = line.strip_prefix("E: Package '") {
            said.extend(rest.split('\'').next());
        }
    }
    wanted
        .iter()
        .filter(|w| said.contains(&w.as_str()))
        .cloned()
        .collect()
}

/// Whether a failed transaction failed only because a lock was held, so trying again later
/// may succeed: rpm's transaction lock, or dnf/yum's own lock with `exit_on_lock` (exit 200).
pub fn lock_failure(code: Option<i32>, output: &str) -> bool {
    code == Some(200)
        || output.contains("can't create transaction lock")
        || output.contains("another copy is running")
        || output.contains("Waiting for process with pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_managers_words_for_a_missing_name() {
        let wanted = names(&["emr-hello", "no-such-pkg", "nope2"]);
        let dnf = "Last metadata expiration check: 0:00:01 ago.\n\
                   No match for argument: no-such-pkg\n\
                   Error: Unable to find a match: no-such-pkg nope2\n";
        assert_eq!(unavailable(dnf, &wanted), names(&["no-such-pkg", "nope2"]));
        let yum = "Loaded plugins: priorities\nNo package no-such-pkg available.\n";
        assert_eq!(unavailable(yum, &wanted), names(&["no-such-pkg"]));
        let apt = "E: Unable to locate package nope2\n";
        assert_eq!(unavailable(apt, &wanted), names(&["nope2"]));
        let apt2 = "E: Package 'no-such-pkg' has no installation candidate\n";
        assert_eq!(unavailable(apt2, &wanted), names(&["no-such-pkg"]));
        assert!(unavailable("No match for argument: rm -rf /\n", &wanted).is_empty());
    }

    #[test]
    fn the_error_says_what_was_and_was_not_installed() {
        let e = Incomplete {
            cmd: "dnf install -y emr-hello no-such-pkg".into(),
            status: "status 1".into(),
            unavailable: names(&["no-such-pkg"]),
            not_installed: names(&["emr-hello", "no-such-pkg"]),
            installed: vec![],
        };
        assert_eq!(
            e.to_string(),
            "`dnf install -y emr-hello no-such-pkg` exited with status 1: no enabled repository \
             provides no-such-pkg; not installed: emr-hello, no-such-pkg; the transaction \
             installed nothing"
        );
        let yum = Incomplete {
            status: "status 0".into(),
            not_installed: names(&["no-such-pkg"]),
            installed: names(&["emr-hello"]),
            ..e
        };
        assert!(yum.to_string().ends_with("it installed emr-hello"), "{yum}");
    }

    #[test]
    fn lock_failures_are_told_apart() {
        assert!(lock_failure(
            Some(1),
            "error: can't create transaction lock on /var/lib/rpm/.rpm.lock (Resource temporarily unavailable)"
        ));
        assert!(lock_failure(Some(200), ""));
        assert!(!lock_failure(Some(1), "Error: Unable to find a match: x"));
    }
}
