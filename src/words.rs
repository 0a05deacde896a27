//! Counts in messages, in the right number ("1 row", "2 rows").

/// `count` and the noun that goes with it.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(super::count(0, "row", "rows"), "0 rows");
        assert_eq!(super::count(1, "row", "rows"), "1 row");
        assert_eq!(super::count(2, "request", "requests"), "2 requests");
    }
}
