//! The sandbox's make-believe world: which documents exist and what they hold.
//!
//! Everything is derived from a hash of the seed and the document
//! reference, so the same reference always gives the same answer for a
//! seed, across runs and machines, without storing anything.

/// Owner codes used for generated container numbers (CMA CGM's among them,
/// domain note §5).
const OWNER_CODES: [&str; 12] = [
    "CGMU", "CMAU", "AMCU", "CCLU", "MSCU", "MAEU", "HLXU", "TGHU", "TCLU", "SEGU", "CSQU", "ONEU",
];

/// What the service knows about a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub tracking_id: String,
    pub units: Vec<HandlingUnit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlingUnit {
    /// S)ONE passage identifier: `CNI` + 10 digits.
    pub spi: String,
    /// ISO 6346 container number with a valid check digit.
    pub reference: String,
}

/// 64-bit FNV-1a: stable across Rust versions and platforms, unlike
/// `std`'s hashers.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64: a small, well-mixed stream from one hash.
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64, key: &str) -> Stream {
        Stream(fnv1a(seed, key.as_bytes()))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Salt for the draw deciding whether a document exists.
const EXISTS_SALT: u64 = 0x6578_6973_7473;

/// Whether the service knows `reference` at all: a fraction
/// `unknown_rate` of references are unknown to it.
pub fn is_known(seed: u64, reference: &str, unknown_rate: f64) -> bool {
    !Stream::new(seed ^ EXISTS_SALT, reference).chance(unknown_rate)
}

/// The document behind `reference`, if the service knows it.
pub fn lookup(seed: u64, reference: &str, unknown_rate: f64) -> Option<Document> {
    is_known(seed, reference, unknown_rate).then(|| document(seed, reference))
}

/// The document behind `reference` for `seed` (were it known).
pub fn document(seed: u64, reference: &str) -> Document {
    let mut s = Stream::new(seed, reference);
    let tracking_id = format!("TRK{:010}", s.below(10_000_000_000));
    // About 8% of documents hold no handling unit; the rest 1 to 8, mostly few.
    let roll = s.below(100);
    let count = match roll {
        0..8 => 0,
        8..45 => 1,
        45..70 => 2,
        70..84 => 3,
        84..92 => 4,
        _ => 5 + s.below(4) as usize,
    };
    let units = (0..count)
        .map(|_| HandlingUnit {
            spi: format!("CNI{:010}", s.below(10_000_000_000)),
            reference: container_number(
                OWNER_CODES[s.below(OWNER_CODES.len() as u64) as usize],
                s.below(1_000_000) as u32,
            ),
        })
        .collect();
    Document { tracking_id, units }
}

/// ISO 6346 value of a character of a container number.
fn iso6346_value(c: char) -> Option<u32> {
    if let Some(d) = c.to_digit(10) {
        return Some(d);
    }
    if !c.is_ascii_uppercase() {
        return None;
    }
    // A=10, then upward skipping multiples of 11 (11, 22, 33).
    let mut value = 10;
    for letter in 'A'..=c {
        if letter != 'A' {
            value += 1;
            if value % 11 == 0 {
                value += 1;
            }
        }
    }
    Some(value)
}

/// Check digit of the first ten characters of a container number; `None`
/// if they are not 4 letters and 6 digits.
pub fn check_digit(first_ten: &str) -> Option<u32> {
    let chars: Vec<char> = first_ten.chars().collect();
    if chars.len() != 10
        || !chars[..4].iter().all(char::is_ascii_uppercase)
        || !chars[4..].iter().all(char::is_ascii_digit)
    {
        return None;
    }
    let sum: u32 = chars
        .iter()
        .enumerate()
        .map(|(i, c)| iso6346_value(*c).map(|v| v << i))
        .sum::<Option<u32>>()?;
    Some(sum % 11 % 10)
}

/// `owner` (4 letters) + 6-digit serial + check digit.
pub fn container_number(owner: &str, serial: u32) -> String {
    let first_ten = format!("{owner}{:06}", serial % 1_000_000);
    let digit = check_digit(&first_ten).unwrap_or(0);
    format!("{first_ten}{digit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_of_known_container_numbers() {
        // Worked examples from the domain note §5.
        assert_eq!(check_digit("CSQU305438"), Some(3));
        assert_eq!(check_digit("MWCU605978"), Some(4));
        assert_eq!(check_digit("AAAU123456"), Some(6));
        // SOGET's own example does not carry a valid digit (domain note §1.6).
        assert_eq!(check_digit("CGMU243660"), Some(8));
        assert_eq!(check_digit("CGMU24366"), None);
        assert_eq!(check_digit("cgmu243660"), None);
    }

    #[test]
    fn letter_values_skip_multiples_of_eleven() {
        assert_eq!(iso6346_value('A'), Some(10));
        assert_eq!(iso6346_value('B'), Some(12));
        assert_eq!(iso6346_value('K'), Some(21));
        assert_eq!(iso6346_value('L'), Some(23));
        assert_eq!(iso6346_value('U'), Some(32));
        assert_eq!(iso6346_value('V'), Some(34));
        assert_eq!(iso6346_value('Z'), Some(38));
    }

    #[test]
    fn generated_documents_look_real() {
        for i in 0..2000 {
            let doc = document(7, &format!("37142{i:05}"));
            assert_eq!(doc.tracking_id.len(), 13);
            assert!(doc.tracking_id.starts_with("TRK"));
            assert!(doc.units.len() <= 8);
            for u in &doc.units {
                assert_eq!(u.spi.len(), 13, "{u:?}");
                assert!(u.spi.starts_with("CNI"));
                assert_eq!(u.reference.len(), 11);
                let digit = u.reference[10..].parse::<u32>().unwrap();
                assert_eq!(check_digit(&u.reference[..10]), Some(digit), "{u:?}");
            }
        }
    }

    #[test]
    fn unit_counts_cover_zero_to_many() {
        let counts: Vec<usize> = (0..2000)
            .map(|i| document(0, &format!("BL{i}")).units.len())
            .collect();
        let empty = counts.iter().filter(|c| **c == 0).count();
        assert!(
            (80..=250).contains(&empty),
            "{empty} documents without units"
        );
        assert!(counts.iter().any(|c| *c >= 5));
    }

    #[test]
    fn a_share_of_documents_is_unknown() {
        let unknown = (0..10_000)
            .filter(|i| lookup(0, &format!("U{i}"), 0.02).is_none())
            .count();
        assert!((150..=250).contains(&unknown), "{unknown}");
        assert!((0..1000).all(|i| lookup(0, &format!("U{i}"), 0.0).is_some()));
    }

    #[test]
    fn stable_for_a_seed_over_many_references() {
        // A property over a seeded sample of references and seeds.
        let mut rng = Stream::new(1, "property");
        for _ in 0..500 {
            let seed = rng.next_u64();
            let len = 1 + rng.below(30) as usize;
            let reference: String = (0..len)
                .map(|_| char::from(b' ' + rng.below(95) as u8))
                .collect();
            assert_eq!(lookup(seed, &reference, 0.1), lookup(seed, &reference, 0.1));
            assert_eq!(document(seed, &reference), document(seed, &reference));
        }
    }

    #[test]
    fn same_seed_same_answer_other_seed_other_answer() {
        for r in ["3714238101", "CMDUFR1234567", "x"] {
            assert_eq!(document(42, r), document(42, r));
            assert_ne!(document(42, r).tracking_id, document(43, r).tracking_id);
        }
    }
}
