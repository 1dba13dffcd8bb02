//! Config files as read from disk, and the problems found in them.
//!
//! Every problem carries the file and (where the file format allows) the line, so that a user
//! can go straight to what needs changing. Problems are collected, not thrown one at a time.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The text of one config file, kept so that byte offsets can be turned into line numbers.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<Self, ConfigProblem> {
        std::fs::read_to_string(path)
            .map(|text| SourceFile {
                path: path.to_path_buf(),
                text,
            })
            .map_err(|e| ConfigProblem::file(path, format!("cannot read file: {e}")))
    }

    /// 1-based line number of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    pub fn problem(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            file: self.path.clone(),
            line: span.map(|s| self.line_of(s.start)),
            message: message.into(),
        }
    }

    /// Parses the file as TOML into `T`, turning syntax errors and unknown keys into a problem
    /// with a line number.
    pub fn parse_toml<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigProblem> {
        toml::from_str(&self.text).map_err(|e| {
            let message = e.message().trim_end().to_string();
            self.problem(e.span(), message)
        })
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigProblem {
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        ConfigProblem {
            file: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Everything wrong with a configuration; loading fails as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "configuration has {count} problem{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl From<ConfigProblem> for ConfigError {
    fn from(problem: ConfigProblem) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl From<Vec<ConfigProblem>> for ConfigError {
    fn from(problems: Vec<ConfigProblem>) -> Self {
        ConfigError { problems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_are_one_based() {
        let file = SourceFile {
            path: "x.toml".into(),
            text: "a = 1\nb = 2\nc = 3\n".into(),
        };
        assert_eq!(file.line_of(0), 1);
        assert_eq!(file.line_of(6), 2);
        assert_eq!(file.line_of(12), 3);
        assert_eq!(file.line_of(10_000), 4);
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Conf {
            a: u32,
        }
        let file = SourceFile {
            path: "x.toml".into(),
            text: "a = 1\nbogus = 2\n".into(),
        };
        let problem = file.parse_toml::<Conf>().unwrap_err();
        assert_eq!(problem.line, Some(2));
        assert!(problem.message.contains("bogus"), "{}", problem.message);
        assert_eq!(problem.to_string().split(':').nth(1), Some("2"));
    }
}
