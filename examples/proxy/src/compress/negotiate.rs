//! `Accept-Encoding` (RFC 9110 §12.5.3): which content codings a client
//! takes, with their weights, and the one a response is sent in.

use hyper::header::{ACCEPT_ENCODING, HeaderMap};

/// A coding the proxy compresses with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }

    /// The coding a name means (`x-gzip` is gzip, §8.4.1.3).
    pub(crate) fn from_token(token: &str) -> Option<Self> {
        match token.to_ascii_lowercase().as_str() {
            "zstd" => Some(Self::Zstd),
            "br" => Some(Self::Brotli),
            "gzip" | "x-gzip" => Some(Self::Gzip),
            _ => None,
        }
    }
}

/// A client's `Accept-Encoding`, read. Weights are thousandths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// No header at all: any coding is acceptable (§12.5.3), though a
    /// server does best to send none.
    absent: bool,
    /// Codings named, in lower case, with their weights.
    named: Vec<(String, u16)>,
    /// `*`'s weight, if named.
    any: Option<u16>,
}

/// Codings one header may list; the rest are ignored (a bound on work).
const MAX_CODINGS: usize = 32;

impl Accepted {
    pub(crate) fn read(headers: &HeaderMap) -> Self {
        let mut lines = headers.get_all(ACCEPT_ENCODING).iter().peekable();
        let mut out = Self {
            absent: lines.peek().is_none(),
            named: Vec::new(),
            any: None,
        };
        let items = lines
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(','))
            .take(MAX_CODINGS);
        for item in items {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let mut weight = 1000;
            for parameter in parts {
                if let Some((key, value)) = parameter.split_once('=') {
                    if key.trim().eq_ignore_ascii_case("q") {
                        // A weight that cannot be read refuses the coding
                        // rather than guessing.
                        weight = qvalue(value.trim()).unwrap_or(0);
                    }
                }
            }
            if name == "*" {
                out.any = Some(weight);
            } else {
                let name = if name == "x-gzip" {
                    "gzip".to_owned()
                } else {
                    name
                };
                out.named.push((name, weight));
            }
        }
        out
    }

    /// The weight of `coding` (a lower-case name), 0 when refused.
    pub(crate) fn weight(&self, coding: &str) -> u16 {
        if self.absent {
            return 1000;
        }
        if let Some((_, weight)) = self.named.iter().find(|(name, _)| name == coding) {
            return *weight;
        }
        if coding == "identity" {
            // Identity is acceptable unless refused by name or by `*`.
            return match self.any {
                Some(0) => 0,
                _ => 1,
            };
        }
        self.any.unwrap_or(0)
    }

    /// Whether a response with `Content-Encoding` `encoding` (None:
    /// identity) may be sent to this client.
    pub(crate) fn takes(&self, encoding: Option<&str>) -> bool {
        match encoding {
            None => self.weight("identity") > 0,
            Some(encoding) => encoding
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity")
                .all(|c| self.weight(if c == "x-gzip" { "gzip" } else { &c }) > 0),
        }
    }

    /// The coding to send among `offered` (the server's preference order):
    /// the highest weight, ties to the earlier offered; `None` when the
    /// client named no header, takes none of them, or weighs identity
    /// above them.
    pub(crate) fn choose(&self, offered: &[Coding]) -> Option<Coding> {
        if self.absent {
            return None;
        }
        let mut best: Option<(Coding, u16)> = None;
        for coding in offered {
            let weight = self.weight(coding.token());
            if weight > 0 && best.is_none_or(|(_, w)| weight > w) {
                best = Some((*coding, weight));
            }
        }
        let (coding, weight) = best?;
        let identity = self
            .named
            .iter()
            .find(|(name, _)| name == "identity")
            .map(|(_, w)| *w);
        match identity {
            Some(identity) if identity > weight => None,
            _ => Some(coding),
        }
    }

    /// The codings of `offered` this client takes, as one short text: the
    /// cache's key for `Vary: Accept-Encoding`, so clients that write the
    /// header differently but take the same codings share a variant.
    pub(crate) fn normal_form(&self, offered: &[Coding]) -> String {
        if self.absent {
            return "*absent".to_owned();
        }
        let mut out = String::new();
        for coding in offered {
            if self.weight(coding.token()) > 0 {
                out.push_str(coding.token());
                out.push(',');
            }
        }
        if self.weight("identity") == 0 {
            out.push_str("!identity");
        }
        out
    }
}

/// A qvalue (§12.4.2): `0`, `0.ddd`, `1` or `1.000`, in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const ALL: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    fn accepted(value: Option<&str>) -> Accepted {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(
                ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("a value"),
            );
        }
        Accepted::read(&headers)
    }

    #[test]
    fn negotiation_table() {
        use Coding::*;
        let table: [(Option<&str>, &[Coding], Option<Coding>); 17] = [
            (None, &ALL, None),
            (Some(""), &ALL, None),
            (Some("gzip"), &ALL, Some(Gzip)),
            (Some("x-gzip"), &ALL, Some(Gzip)),
            (Some("GZIP, br"), &ALL, Some(Brotli)),
            (Some("gzip, deflate, br, zstd"), &ALL, Some(Zstd)),
            (Some("gzip;q=1.0, br;q=0.5"), &ALL, Some(Gzip)),
            (Some("br;q=0, gzip;q=0.001"), &ALL, Some(Gzip)),
            (Some("br;q=0, gzip;q=0"), &ALL, None),
            (Some("*"), &ALL, Some(Zstd)),
            (Some("*;q=0.5, gzip"), &ALL, Some(Gzip)),
            (Some("*;q=0"), &ALL, None),
            (Some("gzip;q=0.5, identity;q=1"), &ALL, None),
            (Some("gzip;q=1, identity;q=0.5"), &ALL, Some(Gzip)),
            (Some("gzip;q=2"), &ALL, None),
            (Some("gzip;q=0.5x, br"), &ALL, Some(Brotli)),
            (Some("br, gzip"), &[Gzip, Brotli], Some(Gzip)),
        ];
        for (header, offered, expected) in table {
            assert_eq!(
                accepted(header).choose(offered),
                expected,
                "{header:?} {offered:?}"
            );
        }
    }

    #[test]
    fn what_a_client_takes() {
        let table: [(Option<&str>, Option<&str>, bool); 10] = [
            (None, None, true),
            (None, Some("gzip"), true),
            (Some(""), None, true),
            (Some(""), Some("gzip"), false),
            (Some("gzip"), Some("gzip"), true),
            (Some("gzip"), Some("br"), false),
            (Some("*;q=0"), None, false),
            (Some("*;q=0, identity"), None, true),
            (Some("identity;q=0, gzip"), None, false),
            (Some("deflate, gzip"), Some("gzip, deflate"), true),
        ];
        for (header, encoding, takes) in table {
            assert_eq!(
                accepted(header).takes(encoding),
                takes,
                "{header:?} {encoding:?}"
            );
        }
    }

    #[test]
    fn qvalues_are_exact() {
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.001"), None);
        assert_eq!(qvalue("0.1234"), None);
        assert_eq!(qvalue(".5"), None);
        assert_eq!(qvalue("-0"), None);
    }

    #[test]
    fn one_normal_form_for_the_same_codings() {
        let a = accepted(Some("gzip, br")).normal_form(&ALL);
        let b = accepted(Some("br;q=0.9,GZIP;q=0.8, deflate")).normal_form(&ALL);
        assert_eq!(a, b);
        assert_ne!(a, accepted(Some("gzip")).normal_form(&ALL));
        assert_ne!(
            accepted(None).normal_form(&ALL),
            accepted(Some("")).normal_form(&ALL)
        );
    }
}
