//! Which tools of `/mcp` a caller may see and call: the `mcp_tools` globs of its key and of
//! its team, both when both are set (absent: every tool). Listing and calling ask the same
//! question, so a hidden tool cannot be called by guessing its name.

use std::sync::Arc;

use crate::pipeline::RequestContext;
use crate::store::TeamRecord;

/// The tool permissions of one caller.
pub struct Access {
    key: Option<Vec<String>>,
    team: Option<Arc<TeamRecord>>,
}

impl Access {
    pub fn of(cx: &RequestContext) -> Access {
        Access {
            key: cx.caller.mcp_tools.clone(),
            team: cx.team().filter(|t| t.mcp_tools.is_some()),
        }
    }

    /// Whether the caller may list and call the tool named `tool` (its name at `/mcp`).
    pub fn permits(&self, tool: &str) -> bool {
        let team = self.team.as_deref().and_then(|t| t.mcp_tools.as_deref());
        [self.key.as_deref(), team]
            .into_iter()
            .flatten()
            .all(|globs| globs.iter().any(|glob| matches(glob, tool)))
    }
}

/// Whether `name` matches `glob`, where `*` stands for any run of characters (none too) and
/// `?` for exactly one.
pub fn matches(glob: &str, name: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Greedy, going back to the last `*` on a mismatch: no recursion, no blow-up.
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, n));
                g += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((star_g, star_n)) => {
                    g = star_g + 1;
                    n = star_n + 1;
                    star = Some((star_g, star_n + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_tool_names() {
        for (glob, name, expected) in [
            ("github__*", "github__search_issues", true),
            ("github__*", "github__", true),
            ("github__*", "gitlab__search", false),
            ("vector_store_search", "vector_store_search", true),
            ("vector_store_search", "vector_store_search_all", false),
            ("*", "anything", true),
            ("*__echo", "up__echo", true),
            ("*__echo", "up__echoes", false),
            ("up__?dd", "up__add", true),
            ("up__?dd", "up__dd", false),
            ("a*b*c", "aXXbYYbZc", true),
            ("a*b*c", "aXXbYYbZ", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(matches(glob, name), expected, "{glob} ~ {name}");
        }
    }
}
