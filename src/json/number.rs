//! JSON numbers: the grammar and serde_json's range check, without computing the value.
//!
//! Hand-written so that the strict check accepts exactly the numbers serde_json (which the rest of the crate
//! parses with) accepts: serde_json refuses a number whose `f64` value would be infinite (`1e400`), which the
//! grammar alone allows. The common numbers (up to 18 integer digits, no exponent) take a fast path that
//! checks only the grammar; the others follow serde_json's own reading (`parse_integer` and what follows,
//! without `float_roundtrip`), digit by digit.

use super::error::ErrorKind;
use super::scan::{fail, Fail, Res};

/// A number of `b` at `start` (its `-` or first digit). Returns the position after it.
#[inline(always)]
pub(super) fn number(b: &[u8], start: usize) -> Res<usize> {
    // Fast path, the common numbers: at most 18 integer digits and no exponent cannot be out of range, so
    // only the grammar is checked. Anything else (and every error) takes the exact path.
    let int_start = start + usize::from(b.get(start) == Some(&b'-'));
    let mut i = int_start;
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len > 0 && int_len <= 18 && (int_len == 1 || b.get(int_start) != Some(&b'0')) {
        if b.get(i) == Some(&b'.') {
            let frac_start = i + 1;
            i = frac_start;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == frac_start {
                return Number::new(b, start).parse();
            }
        }
        if !matches!(b.get(i), Some(b'e' | b'E')) {
            return Ok(i);
        }
    }
    Number::new(b, start).parse()
}

/// A number as serde_json reads it.
struct Number<'a> {
    b: &'a [u8],
    start: usize,
    pos: usize,
}

impl Number<'_> {
    fn new(b: &[u8], start: usize) -> Number<'_> {
        Number {
            b,
            start,
            pos: start,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    /// The byte at the cursor is not what the grammar wants (or the text ends there).
    fn unexpected(&self) -> Fail {
        match self.peek() {
            Some(_) => fail(ErrorKind::InvalidNumber, self.pos),
            None => fail(ErrorKind::EofInValue, self.pos),
        }
    }

    #[cold]
    fn parse(mut self) -> Res<usize> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let mut significand: u64 = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(fail(ErrorKind::InvalidNumber, self.pos));
                }
                0
            }
            Some(c @ b'1'..=b'9') => {
                self.pos += 1;
                u64::from(c - b'0')
            }
            _ => return Err(self.unexpected()),
        };
        if significand != 0 {
            while let Some(d @ b'0'..=b'9') = self.peek() {
                let digit = u64::from(d - b'0');
                if overflows_u64(significand, digit) {
                    return self.long_integer(significand);
                }
                self.pos += 1;
                significand = significand * 10 + digit;
            }
        }
        match self.peek() {
            Some(b'.') => self.decimal(significand, 0),
            Some(b'e' | b'E') => self.exponent(significand, 0),
            _ => Ok(self.pos),
        }
    }

    fn long_integer(mut self, significand: u64) -> Res<usize> {
        let mut exponent: i32 = 0;
        loop {
            match self.peek() {
                Some(b'0'..=b'9') => {
                    self.pos += 1;
                    exponent = exponent.wrapping_add(1);
                }
                Some(b'.') => return self.decimal(significand, exponent),
                Some(b'e' | b'E') => return self.exponent(significand, exponent),
                _ => return self.in_range(significand, exponent),
            }
        }
    }

    fn decimal(mut self, mut significand: u64, exponent_before: i32) -> Res<usize> {
        self.pos += 1;
        let mut exponent_after: i32 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            let digit = u64::from(d - b'0');
            if overflows_u64(significand, digit) {
                // Further digits are ignored.
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                let exponent = exponent_before.wrapping_add(exponent_after);
                return match self.peek() {
                    Some(b'e' | b'E') => self.exponent(significand, exponent),
                    _ => self.in_range(significand, exponent),
                };
            }
            self.pos += 1;
            significand = significand * 10 + digit;
            exponent_after = exponent_after.wrapping_sub(1);
        }
        if exponent_after == 0 {
            return Err(self.unexpected());
        }
        let exponent = exponent_before.wrapping_add(exponent_after);
        match self.peek() {
            Some(b'e' | b'E') => self.exponent(significand, exponent),
            _ => self.in_range(significand, exponent),
        }
    }

    fn exponent(mut self, significand: u64, starting: i32) -> Res<usize> {
        self.pos += 1;
        let positive = match self.peek() {
            Some(b'+') => {
                self.pos += 1;
                true
            }
            Some(b'-') => {
                self.pos += 1;
                false
            }
            _ => true,
        };
        let mut exp: i32 = match self.peek() {
            Some(c @ b'0'..=b'9') => i32::from(c - b'0'),
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            self.pos += 1;
            let digit = i32::from(d - b'0');
            if exp >= i32::MAX / 10 && (exp > i32::MAX / 10 || digit > i32::MAX % 10) {
                // An exponent past i32: infinite unless the number is zero or the exponent negative.
                if significand != 0 && positive {
                    return Err(fail(ErrorKind::NumberOutOfRange, self.start));
                }
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                return Ok(self.pos);
            }
            exp = exp * 10 + digit;
        }
        let exponent = if positive {
            starting.saturating_add(exp)
        } else {
            starting.saturating_sub(exp)
        };
        self.in_range(significand, exponent)
    }

    /// serde_json's `f64_from_parts` (without `float_roundtrip`): `significand * 10^exponent` must be finite.
    fn in_range(self, significand: u64, exponent: i32) -> Res<usize> {
        if exponent < 0 || significand == 0 {
            return Ok(self.pos);
        }
        let exponent = exponent.unsigned_abs() as usize;
        // Below 10^289, even u64::MAX * 10^exponent is finite.
        let Some(first) = exponent.checked_sub(289) else {
            return Ok(self.pos);
        };
        match POW10_289.get(first) {
            Some(pow) if (significand as f64 * pow).is_finite() => Ok(self.pos),
            _ => Err(fail(ErrorKind::NumberOutOfRange, self.start)),
        }
    }
}

/// `10^289` to `10^308`, as serde_json's table has them (correctly rounded literals).
const POW10_289: [f64; 20] = [
    1e289, 1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, 1e300, 1e301,
    1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

fn overflows_u64(significand: u64, digit: u64) -> bool {
    significand >= u64::MAX / 10 && (significand > u64::MAX / 10 || digit > u64::MAX % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<usize, (ErrorKind, usize)> {
        number(text.as_bytes(), 0).map_err(|f| (f.kind, f.at))
    }

    #[test]
    fn reads_the_grammar_and_points_at_what_is_wrong() {
        assert_eq!(kind("0"), Ok(1));
        assert_eq!(kind("-12.5e+3,"), Ok(8));
        assert_eq!(kind("123456789012345678901234567890 "), Ok(30));
        assert_eq!(kind("01"), Err((ErrorKind::InvalidNumber, 1)));
        assert_eq!(kind("-"), Err((ErrorKind::EofInValue, 1)));
        assert_eq!(kind("-a"), Err((ErrorKind::InvalidNumber, 1)));
        assert_eq!(kind("1.x"), Err((ErrorKind::InvalidNumber, 2)));
        assert_eq!(kind("1."), Err((ErrorKind::EofInValue, 2)));
        assert_eq!(kind("1e+"), Err((ErrorKind::EofInValue, 3)));
        assert_eq!(kind("1eZ"), Err((ErrorKind::InvalidNumber, 2)));
    }

    #[test]
    fn range_is_that_of_an_f64() {
        assert_eq!(kind("1.7976931348623157e308"), Ok(22));
        assert_eq!(kind("1e-99999999999999"), Ok(17));
        assert_eq!(kind("0e99999999999999"), Ok(16));
        for big in ["1e309", "2e308", "[1e400]", "-1e99999999999999"] {
            let at = usize::from(big.starts_with('['));
            assert_eq!(
                number(big.as_bytes(), at).map_err(|f| (f.kind, f.at)),
                Err((ErrorKind::NumberOutOfRange, at)),
                "{big}"
            );
        }
    }
}
