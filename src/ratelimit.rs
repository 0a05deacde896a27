//! The limit a gateway states in its rate-limit headers, where it sends
//! them: `RateLimit-Policy` as the IETF drafts define it, the quota `q`
//! per window `w` seconds (`"default";q=100;w=10`, draft 08 and later; the
//! earlier drafts' `100;w=10`). Several policies: the tightest speaks.
//! Pure: the pace goes no faster than what it returns.
//!
//! What is *left* (`RateLimit: r=…;t=…`, `X-RateLimit-Remaining`) is not
//! read: a client that keeps to the limit leaves none after nearly every
//! call of a full window, so "none left" says nothing a 429 would not say
//! better, and its reset comes in whole seconds.

/// The tightest stated limit, requests per second, from the value of
/// `RateLimit-Policy`; `None` when none reads.
pub fn stated(policy: &str) -> Option<f64> {
    policy
        .split(',')
        .filter_map(|item| {
            let mut members = item.split(';');
            // The policy's name (a quoted string), or, in the earlier
            // drafts, the quota itself.
            let first = members.next()?.trim();
            let mut quota = first.parse::<u64>().ok();
            let mut window = None;
            for param in members {
                match param.trim().split_once('=') {
                    Some(("q", v)) => quota = v.trim().parse::<u64>().ok(),
                    Some(("w", v)) => window = v.trim().parse::<u64>().ok(),
                    _ => {}
                }
            }
            let (quota, window) = (quota?, window?);
            (quota > 0 && window > 0).then(|| quota as f64 / window as f64)
        })
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_as_requests_per_second() {
        let cases = [
            ("\"default\";q=100;w=10", Some(10.0)),
            ("\"sandbox\";q=40;w=1", Some(40.0)),
            ("\"minute\";q=1200;w=60", Some(20.0)),
            // The tightest of several.
            ("\"s\";q=50;w=1, \"m\";q=1200;w=60", Some(20.0)),
            // Earlier drafts: the quota first.
            ("100;w=10", Some(10.0)),
            ("10;w=1, 1000;w=3600", Some(1000.0 / 3600.0)),
            // Other parameters are ignored.
            ("\"p\";q=30;w=1;pk=:abc=:", Some(30.0)),
            (" \"p\" ; q=30 ; w=2 ", Some(15.0)),
            // Not enough to go by.
            ("\"p\";q=30", None),
            ("\"p\";w=1", None),
            ("\"p\";q=0;w=1", None),
            ("\"p\";q=10;w=0", None),
            ("\"p\";q=many;w=1", None),
            ("garbage", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(stated(value), expected, "{value:?}");
        }
    }
}
