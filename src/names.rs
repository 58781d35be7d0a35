//! Tool and prompt names: which names are malformed, what a name folds to, MCP's tool-name guidance, and which
//! governed key a name is a look-alike of. Pure; the engine decides with it ([`crate::engine`]).
//!
//! A policy key is compared with a name exactly. A server may not: it may trim the name, drop invisible
//! characters, apply Unicode compatibility normalisation (NFKC: `ｄｅｌｅｔｅ` is `delete`) or compare without
//! letter case (Go's `strings.EqualFold` also takes `ſ` for `s` and the Kelvin sign for `k`). A name that is not a
//! governed key but that such a server could take for one would otherwise fall to the default posture. So:
//!
//! - **Malformed** ([`malformed`]): a name with a control character (Cc), a line or paragraph separator (Zl,
//!   Zp), a format character (Cf: zero-width space and joiners, bidi controls, soft hyphen, word joiner, BOM,
//!   tags…) or another default-ignorable code point (variation selectors, Hangul fillers, combining grapheme
//!   joiner…), or with white space (Unicode White_Space) at either end. MCP's tool-name guidance has no room
//!   for any of them; such names are refused whatever the policy says.
//! - **Folding** ([`fold`]): ASCII letters to lower case, and every other character that NFKC or a case
//!   mapping turns into ASCII to that ASCII, in lower case (fullwidth forms, mathematical alphanumerics,
//!   circled and parenthesised letters and digits, super- and subscripts, Roman numerals, letterlike symbols,
//!   ligatures such as `ﬁ`, squared abbreviations such as `㎏`, `ß` → `ss`, `ſ` → `s`, `İ` → `i`, the Kelvin
//!   sign → `k`, no-break and other spaces → space). Nothing else changes: letters outside ASCII keep their
//!   case (policy keys are ASCII in practice: MCP's guidance), and confusable letters of other scripts
//!   (Cyrillic `а`) stay what they are: no normalisation a server applies makes them Latin, and
//!   `"tool_names": "strict"` refuses them.
//! - **Look-alike** ([`LookAlikes::of`]): a name whose folding equals the folding of a governed key (or is
//!   matched by the folded glob) while the name itself is not that key (or is not matched by the glob as
//!   written).
//! - **MCP's guidance** (SEP-986, [`in_guidance`]): 1 to 128 characters, each `A`–`Z`, `a`–`z`, `0`–`9`, `_`,
//!   `-` or `.`.
//!
//! The tables are compact on purpose (the filter is wasm): only the code points that fold to ASCII (1,400 or so,
//! as about 200 runs and 300 single entries) and the ranges of invisible code points, generated from Unicode
//! 18.0 by the tests below (`cargo test names -- --ignored --nocapture` prints them), which also check them
//! against the Unicode data of the `unicode-normalization` and `unicode-properties` crates (test-only).

use crate::policy::{is_glob, Glob};
use std::borrow::Cow;
use std::fmt;

/// Why a name can never be a tool or prompt name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A control character (Cc) or a line or paragraph separator (Zl, Zp).
    Control(char),
    /// A format character (Cf) or another default-ignorable code point: nothing to see, something to match.
    Invisible(char),
    /// White space at the start or the end.
    Padded,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Control(c) => write!(f, "has a control character (U+{:04X})", u32::from(*c)),
            Malformed::Invisible(c) => {
                write!(f, "has an invisible character (U+{:04X})", u32::from(*c))
            }
            Malformed::Padded => f.write_str("starts or ends with white space"),
        }
    }
}

/// Why `name` is malformed, if it is (the first reason in the name).
pub fn malformed(name: &str) -> Option<Malformed> {
    for c in name.chars() {
        let cp = u32::from(c);
        if cp < 0x20 || (0x7f..0xa0).contains(&cp) || cp == 0x2028 || cp == 0x2029 {
            return Some(Malformed::Control(c));
        }
        if cp >= 0xad && in_ranges(INVISIBLE, cp) {
            return Some(Malformed::Invisible(c));
        }
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Some(Malformed::Padded);
    }
    None
}

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    let i = ranges.partition_point(|(_, last)| *last < cp);
    ranges.get(i).is_some_and(|(first, _)| *first <= cp)
}

/// True when `name` follows MCP's tool-name guidance (SEP-986): 1 to 128 characters of `A`–`Z`, `a`–`z`,
/// `0`–`9`, `_`, `-`, `.`.
pub fn in_guidance(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `name` folded (see the module documentation): equal foldings are names a server may take for each other.
pub fn fold(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            fold_char(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// Appends the folding of one character that is not ASCII.
fn fold_char(out: &mut String, c: char) {
    let cp = u32::from(c);
    let i = RUNS.partition_point(|run| run >> 15 <= cp);
    if let Some(run) = i.checked_sub(1).and_then(|i| RUNS.get(i)) {
        let (first, len, to, step) = (run >> 15, (run >> 8) & 0x7f, (run >> 1) & 0x7f, run & 1);
        if cp - first < len {
            // Stays ASCII: a run never goes past `~` (checked by the tests).
            out.push(char::from_u32(to + (cp - first) * step).unwrap_or(c));
            return;
        }
    }
    if let Ok(i) = STRINGS.binary_search_by_key(&cp, |e| e >> 15) {
        if let Some(e) = STRINGS.get(i) {
            let (at, len) = (((e >> 4) & 0x7ff) as usize, (e & 0xf) as usize);
            if let Some(s) = FOLDED.get(at..at + len) {
                out.push_str(s);
                return;
            }
        }
    }
    out.push(c);
}

/// The governed keys of one kind (tools or prompts), ready to tell which one a name is a look-alike of.
#[derive(Debug, Clone, Default)]
pub struct LookAlikes {
    /// Exact keys: folded, and as written.
    exact: Vec<(String, String)>,
    /// Glob keys: as written, as a glob, and as a glob with its literal parts folded.
    globs: Vec<(String, Glob, Glob)>,
}

impl LookAlikes {
    /// From the governed keys: exact names and globs (`*`, `?`), as the policy writes them. Kept in the order
    /// given, which is the order [`LookAlikes::of`] names them in.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> LookAlikes {
        let mut index = LookAlikes::default();
        for key in keys {
            if !is_glob(key) {
                index.exact.push((fold(key).into_owned(), key.to_owned()));
            } else if let Ok(glob) = Glob::new(key) {
                let folded = glob.map_literals(|s| fold(s).into_owned());
                index.globs.push((key.to_owned(), glob, folded));
            }
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    /// The governed key `name` is a look-alike of: the first exact key whose folding equals `name`'s but that
    /// is not `name`, else the first glob that matches `name` folded but not as written. `None` for a name that
    /// folds to no governed key, or only to keys it is (or matches) as written.
    pub fn of(&self, name: &str) -> Option<&str> {
        if self.is_empty() {
            return None;
        }
        let folded = fold(name);
        let exact = self
            .exact
            .iter()
            .find(|(f, key)| *f == folded && key != name)
            .map(|(_, key)| key);
        let glob = || {
            self.globs
                .iter()
                .find(|(_, glob, f)| f.matches(&folded) && !glob.matches(name))
                .map(|(key, _, _)| key)
        };
        exact.or_else(glob).map(String::as_str)
    }
}

/// Code points (ranges, inclusive) above U+00AC that are format characters (Cf) or other default-ignorable
/// code points: invisible. Generated (see the tests).
#[rustfmt::skip]
static INVISIBLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F),
    (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
];

/// Runs of consecutive code points that fold to consecutive ASCII characters (step 1) or all to the same one
/// (step 0), each in one `u32`: first code point << 15 | how many << 8 | ASCII of the first << 1 | step.
/// Generated (see the tests).
#[rustfmt::skip]
static RUNS: &[u32] = &[
    0x00500141, 0x005501c3, 0x00590265, 0x005c8163, 0x005d01df, 0x009802d2, 0x00bf81e7, 0x015801d1, 0x015901d5,
    0x015981e5, 0x015b81ef, 0x015c01f3, 0x017081d9, 0x017101e7, 0x017181f1, 0x01bf0177, 0x0e9601c3, 0x0e9701c5,
    0x0e9802c9, 0x0e9988cf, 0x0e9e01df, 0x0e9f01e1, 0x0e9f81e5, 0x0ea002e9, 0x0ea101ef, 0x0ea181c3, 0x0ea381c5,
    0x0ea402c9, 0x0ea681cf, 0x0ea781d7, 0x0ea801db, 0x0ea901df, 0x0eab01e1, 0x0eab82e9, 0x0ead81ed, 0x0eb101d3,
    0x0eb181e5, 0x0eb202eb, 0x0ece01c7, 0x0ed001cd, 0x0edd81f5, 0x0ff781c1, 0x10000b40, 0x1012015d, 0x10178141,
    0x102f8141, 0x10380161, 0x103881d3, 0x103a0669, 0x103d0157, 0x103e017b, 0x103e8251, 0x103f81dd, 0x10400a61,
    0x10450157, 0x1046017b, 0x10468251, 0x104801c3, 0x104881cb, 0x104901df, 0x104981f1, 0x104a81d1, 0x104b04d7,
    0x104d01e1, 0x104d82e7, 0x104e81ef, 0x104f02f3, 0x108101c7, 0x108502cf, 0x108603d0, 0x108802d2, 0x108902d8,
    0x108a81dd, 0x108c83e1, 0x108e02e4, 0x109201f5, 0x109401f5, 0x109501d7, 0x109602c5, 0x109782ca, 0x109881cd,
    0x109981db, 0x109a01df, 0x109c81d3, 0x10a282c8, 0x10a381cb, 0x10a402d3, 0x10b001d3, 0x10b201ed, 0x10b481f1,
    0x10b601d9, 0x10b682c7, 0x10b781db, 0x10b801d3, 0x10ba01ed, 0x10bc81f1, 0x10be01d9, 0x10be82c7, 0x10bf81db,
    0x12300963, 0x125b1ac3, 0x12681ac3, 0x12750161, 0x163e01d5, 0x163e81ed, 0x18000141, 0x53f881e7, 0x53f901c7,
    0x53f981cd, 0x53fa01e3, 0x7d948157, 0x7f080159, 0x7f098275, 0x7f0a8143, 0x7f0b017f, 0x7f1982be, 0x7f1a8251,
    0x7f1b81f7, 0x7f1c01fb, 0x7f2381b7, 0x7f2401bb, 0x7f2683be, 0x7f280159, 0x7f29015d, 0x7f2a0177, 0x7f2a8175,
    0x7f2b017f, 0x7f2b8143, 0x7f2c8251, 0x7f2d81f7, 0x7f2e01fb, 0x7f2f8147, 0x7f30014d, 0x7f308255, 0x7f31815b,
    0x7f320179, 0x7f32817d, 0x7f33017b, 0x7f3401b9, 0x7f348249, 0x7f358181, 0x7f80a043, 0x7f909ac3, 0x7f9da4b7,
    0x83d281e3, 0xe66b1ac3, 0xe6780a61, 0xea001ac3, 0xea0d1ac3, 0xea1a1ac3, 0xea2707c3, 0xea2b12d3, 0xea341ac3,
    0xea411ac3, 0xea4e01c3, 0xea4f02c7, 0xea5101cf, 0xea5282d5, 0xea5484dd, 0xea5708e7, 0xea5b04c3, 0xea5d81cd,
    0xea5e87d1, 0xea628be1, 0xea681ac3, 0xea751ac3, 0xea8202c3, 0xea8384c9, 0xea8688d5, 0xea8b07e7, 0xea8f1ac3,
    0xea9c02c3, 0xea9d84c9, 0xeaa005d3, 0xeaa301df, 0xeaa507e7, 0xeaa91ac3, 0xeab61ac3, 0xeac31ac3, 0xead01ac3,
    0xeadd1ac3, 0xeaea1ac3, 0xeaf71ac3, 0xeb041ac3, 0xeb111ac3, 0xeb1e1ac3, 0xeb2b1ac3, 0xeb381ac3, 0xeb451ac3,
    0xeb5201d3, 0xebe70a61, 0xebec0a61, 0xebf10a61, 0xebf60a61, 0xebfb0a61, 0xf89581c7, 0xf89601e5, 0xf8981ac3,
    0xfdf80a61,
];

/// Code points that fold to more than one ASCII character, each in one `u32`: code point << 15 | where its
/// folding starts in [`FOLDED`] << 4 | its length. Generated (see the tests).
#[rustfmt::skip]
static STRINGS: &[u32] = &[
    0x006f8002, 0x00990022, 0x00998042, 0x00e38062, 0x00e40082, 0x00e480a2, 0x00e500c2, 0x00e580e2, 0x00e60102,
    0x00f88122, 0x00f90142, 0x00f98162, 0x0f4f0182, 0x101281a2, 0x101301c3, 0x101e01f2, 0x10238212, 0x10240232,
    0x10248252, 0x10540272, 0x10800293, 0x108082c3, 0x108282f3, 0x10830323, 0x108b0352, 0x10900372, 0x10908393,
    0x109103c2, 0x109d83e3, 0x10b08412, 0x10b10433, 0x10b18462, 0x10b28482, 0x10b304a3, 0x10b384d4, 0x10b40512,
    0x10b50532, 0x10b58553, 0x10b88582, 0x10b905a3, 0x10b985d2, 0x10ba85f2, 0x10bb0613, 0x10bb8644, 0x10bc0682,
    0x10bd06a2, 0x10bd86c3, 0x123486f2, 0x12350712, 0x12358732, 0x12360752, 0x12368772, 0x12370792, 0x123787b2,
    0x123807d2, 0x123887f2, 0x12390812, 0x12398832, 0x123a0853, 0x123a8883, 0x123b08b3, 0x123b88e3, 0x123c0913,
    0x123c8943, 0x123d0973, 0x123d89a3, 0x123e09d3, 0x123e8a04, 0x123f0a44, 0x123f8a84, 0x12400ac4, 0x12408b04,
    0x12410b44, 0x12418b84, 0x12420bc4, 0x12428c04, 0x12430c44, 0x12438c84, 0x12440cc2, 0x12448ce2, 0x12450d02,
    0x12458d22, 0x12460d42, 0x12468d62, 0x12470d82, 0x12478da2, 0x12480dc2, 0x12488de3, 0x12490e13, 0x12498e43,
    0x124a0e73, 0x124a8ea3, 0x124b0ed3, 0x124b8f03, 0x124c0f33, 0x124c8f63, 0x124d0f93, 0x124d8fc3, 0x124e0ff3,
    0x124e9023, 0x124f1053, 0x124f9083, 0x125010b3, 0x125090e3, 0x12511113, 0x12519143, 0x12521173, 0x125291a3,
    0x125311d3, 0x12539203, 0x12541233, 0x12549263, 0x12551293, 0x125592c3, 0x125612f3, 0x12569323, 0x12571353,
    0x12579383, 0x125813b3, 0x125893e3, 0x12591413, 0x12599443, 0x125a1473, 0x125a94a3, 0x153a14d3, 0x153a9502,
    0x153b1523, 0x19281553, 0x19289582, 0x192915a2, 0x192995c2, 0x192a15e2, 0x192a9602, 0x192b1622, 0x192b9642,
    0x192c1662, 0x192c9682, 0x192d16a2, 0x192d96c2, 0x192e16e2, 0x192e9702, 0x192f1722, 0x192f9742, 0x19589762,
    0x19591782, 0x195997a2, 0x195a17c2, 0x195a97e2, 0x195b1802, 0x195b9822, 0x195c1842, 0x195c9862, 0x195d1882,
    0x195d98a2, 0x195e18c2, 0x195e98e2, 0x195f1902, 0x195f9922, 0x19661942, 0x19669963, 0x19671992, 0x196799b3,
    0x19b899e3, 0x19b91a12, 0x19b99a32, 0x19ba1a53, 0x19ba9a82, 0x19bb1aa2, 0x19bb9ac2, 0x19bc1ae3, 0x19bc9b13,
    0x19bd1b42, 0x19c01b62, 0x19c09b82, 0x19c19ba2, 0x19c21bc2, 0x19c29be2, 0x19c31c02, 0x19c39c22, 0x19c41c43,
    0x19c49c74, 0x19c51cb2, 0x19c59cd2, 0x19c71cf2, 0x19c79d12, 0x19c81d32, 0x19c89d53, 0x19c91d83, 0x19c99db3,
    0x19ca1de3, 0x19cb1e12, 0x19cb9e32, 0x19cc1e52, 0x19cc9e72, 0x19cd1e92, 0x19ce1eb2, 0x19ce9ed2, 0x19cf1ef2,
    0x19cf9f13, 0x19d01f43, 0x19d09f72, 0x19d11f93, 0x19d19fc3, 0x19d21ff3, 0x19d2a022, 0x19d32043, 0x19d4a072,
    0x19d52093, 0x19d5a0c3, 0x19d620f3, 0x19d6a123, 0x19d82152, 0x19d8a172, 0x19d9a192, 0x19da21b2, 0x19daa1d2,
    0x19dba1f2, 0x19dc2212, 0x19dca232, 0x19dd2252, 0x19dda272, 0x19dea292, 0x19df22b2, 0x19dfa2d2, 0x19e122f4,
    0x19e1a332, 0x19e22352, 0x19e2a372, 0x19e3a393, 0x19e423c2, 0x19e4a3e2, 0x19e52402, 0x19e5a422, 0x19e62442,
    0x19e6a462, 0x19e72482, 0x19e7a4a2, 0x19e824c2, 0x19e8a4e2, 0x19e92503, 0x19e9a532, 0x19ea2552, 0x19eaa573,
    0x19eb25a3, 0x19eba5d2, 0x19ec25f4, 0x19eca633, 0x19ed2662, 0x19eda682, 0x19ee26a2, 0x19eea6c2, 0x19ffa6e3,
    0x7d802712, 0x7d80a732, 0x7d812752, 0x7d81a773, 0x7d8227a3, 0x7d82a7d2, 0x7d8327f2, 0x7f0ca813, 0x7f182842,
    0xeb532862, 0xefcaa882, 0xf88028a2, 0xf880a8c2, 0xf88128e2, 0xf881a902, 0xf8822922, 0xf882a942, 0xf8832962,
    0xf883a982, 0xf88429a2, 0xf884a9c2, 0xf88529e2, 0xf8882a03, 0xf888aa33, 0xf8892a63, 0xf889aa93, 0xf88a2ac3,
    0xf88aaaf3, 0xf88b2b23, 0xf88bab53, 0xf88c2b83, 0xf88cabb3, 0xf88d2be3, 0xf88dac13, 0xf88e2c43, 0xf88eac73,
    0xf88f2ca3, 0xf88facd3, 0xf8902d03, 0xf890ad33, 0xf8912d63, 0xf891ad93, 0xf8922dc3, 0xf892adf3, 0xf8932e23,
    0xf893ae53, 0xf8942e83, 0xf894aeb3, 0xf896aee2, 0xf8972f02, 0xf8a52f22, 0xf8a5af42, 0xf8a62f62, 0xf8a6af82,
    0xf8a72fa3, 0xf8a7afd2, 0xf8b52ff2, 0xf8b5b012, 0xf8b63032, 0xf8c83052,
];

/// The foldings of [`STRINGS`], one after the other. Generated (see the tests).
static FOLDED: &str = concat!(
    "ssijijljljljnjnjnjdzdzdzss.....!!???!!?rsa/ca/sc/oc/unosmteltmfaxiiiiiivviviiviiiixxixiiiiiiiivv",
    "iviiviiiixxixii1011121314151617181920(1)(2)(3)(4)(5)(6)(7)(8)(9)(10)(11)(12)(13)(14)(15)(16)(17)",
    "(18)(19)(20)1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)",
    "(l)(m)(n)(o)(p)(q)(r)(s)(t)(u)(v)(w)(x)(y)(z)::======pte2122232425262728293031323334353637383940",
    "41424344454647484950hgergevltdhpadaaubarovpcdmdm2dm3iupanamakakbmbgbcalkcalpfnfmgkghzkhzmhzghzth",
    "zmldlklfmnmmmcmkmmm2cm2m2km2mm3cm3m3km3pakpampagparadpsnsmspvnvmvkvmvpwnwmwkwmwa.m.bqcccdco.dbgy",
    "hahpinkkkmktlmlnloglxmbmilmolphp.m.ppmprsrsvwbgalfffiflffifflstst.....ssss0.0,1,2,3,4,5,6,7,8,9,",
    "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)(m)(n)(o)(p)(q)(r)(s)(t)(u)(v)(w)(x)(y)(z)cdwzhvmvsdssppvwcm",
    "cmdmrdj",
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use unicode_normalization::UnicodeNormalization;
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

    /// Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 18.0) that is not Cf, plus the Cf ones:
    /// the whole property (the crates have no table of it).
    const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x034F, 0x034F),
        (0x061C, 0x061C),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0),
        (0xFFF0, 0xFFF8),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ];

    fn chars() -> impl Iterator<Item = char> {
        (0..=0x10FFFFu32).filter_map(char::from_u32)
    }

    /// Invisible per the Unicode data: Cf, or default-ignorable.
    fn invisible_per_unicode(c: char, gc: GeneralCategory) -> bool {
        gc == GeneralCategory::Format
            || DEFAULT_IGNORABLE
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&u32::from(c)))
    }

    fn control_per_unicode(gc: GeneralCategory) -> bool {
        matches!(
            gc,
            GeneralCategory::Control
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
    }

    /// What a character folds to per the Unicode data: the ASCII (in lower case) that NFKC and case mappings,
    /// applied in any order, make of it; `None` when they make no ASCII of it.
    fn fold_per_unicode(c: char) -> Option<String> {
        if c.is_ascii() {
            return Some(c.to_ascii_lowercase().to_string());
        }
        let gc = c.general_category();
        if gc == GeneralCategory::Unassigned
            || control_per_unicode(gc)
            || invisible_per_unicode(c, gc)
        {
            return None;
        }
        // Go's unicode.ToLower uses the simple mapping, U+0130 → i; full case mapping gives i + U+0307.
        if c == '\u{130}' {
            return Some("i".into());
        }
        let one = c.to_string();
        let unchanged = |s: String| s == one;
        if unchanged(one.nfkc().collect())
            && unchanged(one.to_lowercase())
            && unchanged(one.to_uppercase())
        {
            return None;
        }
        let mut seen = vec![one.clone()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for s in &seen {
                next.push(s.nfkc().collect::<String>());
                next.push(s.to_lowercase());
                next.push(s.to_uppercase());
            }
            for s in next {
                if !seen.contains(&s) {
                    seen.push(s);
                }
            }
        }
        let ascii: Vec<String> = seen
            .iter()
            .filter(|s| !s.is_empty() && s.is_ascii())
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let first = ascii.first()?;
        assert!(ascii.iter().all(|a| a == first), "{c:?}: {ascii:?}");
        Some(first.clone())
    }

    /// Every character that folds to ASCII, once per test binary (it takes a while).
    fn computed_fold_table() -> &'static BTreeMap<u32, String> {
        static TABLE: std::sync::OnceLock<BTreeMap<u32, String>> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            chars()
                .filter(|c| !c.is_ascii())
                .filter_map(|c| fold_per_unicode(c).map(|s| (u32::from(c), s)))
                .collect()
        })
    }

    fn ranges(cps: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for cp in cps {
            match out.last_mut() {
                Some((_, last)) if *last + 1 == cp => *last = cp,
                _ => out.push((cp, cp)),
            }
        }
        out
    }

    fn computed_invisible() -> Vec<(u32, u32)> {
        ranges(
            chars()
                .filter(|c| {
                    u32::from(*c) >= 0xad && invisible_per_unicode(*c, c.general_category())
                })
                .map(u32::from),
        )
    }

    /// A run: (first code point, how many, ASCII of the first, step).
    type Run = (u32, u8, u8, u8);

    fn computed_runs_and_strings() -> (Vec<Run>, Vec<(u32, String)>) {
        let mut runs: Vec<Run> = Vec::new();
        let mut strings = Vec::new();
        for (&cp, s) in computed_fold_table() {
            if s.len() != 1 {
                strings.push((cp, s.clone()));
                continue;
            }
            let to = s.as_bytes()[0];
            if let Some((first, len, first_to, step)) = runs.last_mut() {
                let next = *first + u32::from(*len) == cp && *len < u8::MAX;
                let steps = |st: u8| {
                    u32::from(*first_to) + u32::from(*len) * u32::from(st) == u32::from(to)
                };
                if next && *len == 1 && (steps(0) || steps(1)) {
                    *step = u8::from(steps(1));
                    *len += 1;
                    continue;
                }
                if next && *len > 1 && steps(*step) {
                    *len += 1;
                    continue;
                }
            }
            runs.push((cp, 1, to, 1));
        }
        (runs, strings)
    }

    #[test]
    fn malformed_names() {
        for (name, want) in [
            ("get\u{1}run", Some(Malformed::Control('\u{1}'))),
            ("get\u{7f}run", Some(Malformed::Control('\u{7f}'))),
            ("get\u{9f}run", Some(Malformed::Control('\u{9f}'))),
            ("get\nrun", Some(Malformed::Control('\n'))),
            ("get\u{2028}run", Some(Malformed::Control('\u{2028}'))),
            ("get\u{200b}run", Some(Malformed::Invisible('\u{200b}'))),
            ("\u{202e}nur_teg", Some(Malformed::Invisible('\u{202e}'))),
            ("get\u{ad}run", Some(Malformed::Invisible('\u{ad}'))),
            ("get_run\u{fe0f}", Some(Malformed::Invisible('\u{fe0f}'))),
            ("\u{feff}get_run", Some(Malformed::Invisible('\u{feff}'))),
            ("get_run\u{e0067}", Some(Malformed::Invisible('\u{e0067}'))),
            ("get\u{3164}run", Some(Malformed::Invisible('\u{3164}'))),
            (" get_run", Some(Malformed::Padded)),
            ("get_run\t", Some(Malformed::Control('\t'))),
            ("get_run\u{a0}", Some(Malformed::Padded)),
            ("\u{3000}get_run", Some(Malformed::Padded)),
            ("get_run\u{2009}", Some(Malformed::Padded)),
            ("get run", None),
            ("get\u{a0}run", None),
            ("get_run", None),
            ("ｇｅｔ", None),
            ("", None),
        ] {
            assert_eq!(malformed(name), want, "{name:?}");
        }
        assert_eq!(
            Malformed::Invisible('\u{200b}').to_string(),
            "has an invisible character (U+200B)"
        );
        assert_eq!(
            Malformed::Control('\u{1}').to_string(),
            "has a control character (U+0001)"
        );
    }

    #[test]
    fn folding() {
        for (name, want) in [
            ("get_run", "get_run"),
            ("GET_Run", "get_run"),
            ("ｇｅｔ＿ｒｕｎ", "get_run"),
            ("ＧＥＴ_ＲＵＮ", "get_run"),
            ("𝐠𝐞𝐭_𝐫𝐮𝐧", "get_run"),
            ("𝔤𝔢𝔱_𝔯𝔲𝔫", "get_run"),
            ("ⓖⓔⓣ_ⓡⓤⓝ", "get_run"),
            ("Ⓖet_run", "get_run"),
            ("get_run²", "get_run2"),
            ("get_run₂", "get_run2"),
            ("ﬁle_read", "file_read"),
            ("claß", "class"),
            ("ſearch", "search"),
            ("\u{212a}ill", "kill"),
            ("İd", "id"),
            ("ıd", "id"),
            ("Ⅻ", "xii"),
            ("㎏", "kg"),
            ("get\u{a0}run", "get run"),
            ("get\u{3000}run", "get run"),
            ("run①", "run1"),
            ("café", "café"),
            ("ПРИМЕР", "ПРИМЕР"),
            ("раypal", "раypal"),
        ] {
            assert_eq!(fold(name), want, "{name}");
            assert_eq!(fold(&fold(name)), fold(name), "idempotent: {name}");
        }
        assert!(matches!(fold("get_run"), Cow::Borrowed(_)));
    }

    #[test]
    fn guidance() {
        for ok in ["get_run", "a", "A.b-C_9", &"x".repeat(128)] {
            assert!(in_guidance(ok), "{ok}");
        }
        for bad in [
            "",
            "get run",
            "get/run",
            "get:run",
            "ｇ",
            "café",
            &"x".repeat(129),
            "a*",
        ] {
            assert!(!in_guidance(bad), "{bad}");
        }
    }

    #[test]
    fn look_alikes() {
        let l = LookAlikes::new([
            "delete_run",
            "Admin_Tool",
            "delete_*",
            "secret_?",
            "*_x",
            "delete_*",
        ]);
        for (name, want) in [
            ("DELETE_RUN", Some("delete_run")),
            ("ｄelete_run", Some("delete_run")),
            ("delete_run", None),
            ("admin_tool", Some("Admin_Tool")),
            ("Admin_Tool", None),
            ("Delete_Experiment", Some("delete_*")),
            ("delete_Experiment", None),
            ("SECRET_A", Some("secret_?")),
            ("secret_a", None),
            ("secret_ab", None),
            ("A_X", Some("*_x")),
            ("a_x", None),
            ("get_run", None),
            ("", None),
        ] {
            assert_eq!(l.of(name), want, "{name}");
        }
        assert!(LookAlikes::new([]).is_empty());
        assert_eq!(LookAlikes::new([]).of("x"), None);
        // `＊` is no wildcard: the key is an exact name, whose folding is `get_*`.
        let g = LookAlikes::new(["ｇｅｔ_＊"]);
        assert_eq!(g.of("get_*"), Some("ｇｅｔ_＊"));
        assert_eq!(g.of("get_x"), None);
        // Exact keys are named first, then globs in the order given.
        let p = LookAlikes::new(["*_run", "get_r*", "get_run"]);
        assert_eq!(p.of("GET_RUN"), Some("get_run"));
        let p = LookAlikes::new(["*_run", "get_r*"]);
        assert_eq!(p.of("GET_RUN"), Some("*_run"));
    }

    fn packed_runs() -> Vec<u32> {
        computed_runs_and_strings()
            .0
            .iter()
            .map(|(cp, len, to, step)| {
                assert!(*cp < 1 << 17 && *len < 128 && *to < 128 && *step < 2);
                cp << 15 | u32::from(*len) << 8 | u32::from(*to) << 1 | u32::from(*step)
            })
            .collect()
    }

    fn packed_strings() -> (Vec<u32>, String) {
        let mut folded = String::new();
        let mut entries = Vec::new();
        for (cp, s) in computed_runs_and_strings().1 {
            assert!(cp < 1 << 17 && folded.len() < 1 << 11 && s.len() < 16);
            entries.push(cp << 15 | (folded.len() as u32) << 4 | s.len() as u32);
            folded.push_str(&s);
        }
        (entries, folded)
    }

    /// Prints the tables for this file: `cargo test names::tests::print_tables -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn print_tables() {
        let line = |items: Vec<String>| {
            let mut text = String::new();
            let mut cur = String::from("   ");
            for it in items {
                if cur.len() + it.len() + 1 > 118 {
                    text.push_str(&cur);
                    text.push('\n');
                    cur = String::from("   ");
                }
                cur.push(' ');
                cur.push_str(&it);
            }
            text.push_str(&cur);
            text
        };
        let hex = |v: &[u32]| v.iter().map(|x| format!("0x{x:08x},")).collect::<Vec<_>>();
        println!("static INVISIBLE: &[(u32, u32)] = &[");
        println!(
            "{}",
            line(
                computed_invisible()
                    .iter()
                    .map(|(a, b)| format!("(0x{a:04X}, 0x{b:04X}),"))
                    .collect()
            )
        );
        println!("];\n\nstatic RUNS: &[u32] = &[");
        println!("{}", line(hex(&packed_runs())));
        let (strings, folded) = packed_strings();
        println!("];\n\nstatic STRINGS: &[u32] = &[");
        println!("{}", line(hex(&strings)));
        println!("];\n\nstatic FOLDED: &str = concat!(");
        let chunks: Vec<String> = folded
            .as_bytes()
            .chunks(96)
            .map(|c| format!("    {:?},", std::str::from_utf8(c).unwrap()))
            .collect();
        println!("{}\n);", chunks.join("\n"));
        println!(
            "{} runs, {} strings ({} bytes)",
            packed_runs().len(),
            strings.len(),
            folded.len()
        );
    }

    /// The tables in this file are the Unicode data's, code point by code point.
    #[test]
    fn tables_match_unicode() {
        assert_eq!(unicode_normalization::UNICODE_VERSION, (18, 0, 0));
        assert_eq!(INVISIBLE, computed_invisible().as_slice());
        assert_eq!(RUNS, packed_runs().as_slice());
        let (strings, folded) = packed_strings();
        assert_eq!(STRINGS, strings.as_slice());
        assert_eq!(FOLDED, folded);
        for (first, len, to, step) in computed_runs_and_strings().0 {
            assert!(
                u32::from(to) + u32::from(len) * u32::from(step) <= 0x7f,
                "{first:x}"
            );
        }
        // And `fold`/`malformed` read them so: every code point.
        let table = computed_fold_table();
        let mut within = String::new();
        for c in chars() {
            let mut buf = [0u8; 4];
            let s: &str = c.encode_utf8(&mut buf);
            let folded = fold(s);
            match table.get(&u32::from(c)) {
                Some(f) => assert_eq!(folded, f.as_str()),
                None if c.is_ascii() => assert_eq!(folded, s.to_ascii_lowercase()),
                None => assert_eq!(folded, s, "U+{:04X}", u32::from(c)),
            }
            within.clear();
            within.extend(['a', c, 'b']);
            let bad = malformed(&within);
            let gc = c.general_category();
            if control_per_unicode(gc) {
                assert_eq!(bad, Some(Malformed::Control(c)));
            } else if invisible_per_unicode(c, gc) {
                assert_eq!(bad, Some(Malformed::Invisible(c)));
            } else {
                assert_eq!(bad, None, "U+{:04X}", u32::from(c));
            }
        }
    }
}
