//! Paging across backends, shared by ListVolumes and ListSnapshots: the backends are walked in
//! order and the token names "backend/last name" (an empty name: that backend from its start).

use super::convert;
use crate::error::{Error, Result};

/// One backend's part of a page: its entries and, when it has more, the last name returned.
pub(crate) type Part<T> = (Vec<T>, Option<String>);

/// Up to `max` entries (0: all) from `backends` after `starting_token`, and the next token.
/// `list(backend, after, room)` returns one backend's part (`room` 0: all); `name` names a
/// backend in the token.
pub(crate) fn page_across<B, T>(
    backends: &[B],
    name: impl Fn(&B) -> &str,
    starting_token: &str,
    max: usize,
    mut list: impl FnMut(&B, Option<&str>, usize) -> Result<Part<T>>,
) -> Result<(Vec<T>, String)> {
    let bad_token = || Error::BadToken(starting_token.to_string());
    let after = convert::decode_token(starting_token)?;
    let (after_backend, after_name) = (after.as_deref())
        .map(|a| a.split_once('/').ok_or_else(bad_token))
        .transpose()?
        .unzip();
    let mut entries = Vec::new();
    let mut next_token = String::new();
    let mut started = after_backend.is_none();
    for (i, b) in backends.iter().enumerate() {
        if !started && after_backend != Some(name(b)) {
            continue;
        }
        // The token's backend resumes after its name; the ones after it start from the start.
        let resume = after_name.filter(|n| !started && !n.is_empty());
        started = true;
        let room = if max == 0 { 0 } else { max - entries.len() };
        let (part, last) = list(b, resume, room)?;
        entries.extend(part);
        if let Some(last) = last {
            next_token = convert::encode_token(&format!("{}/{last}", name(b)));
            break;
        }
        if max != 0 && entries.len() == max {
            // This backend ran out exactly at the page's end: the page must still lead on to
            // the next backend that has entries, from its start.
            for next in &backends[i + 1..] {
                if !list(next, None, 1)?.0.is_empty() {
                    next_token = convert::encode_token(&format!("{}/", name(next)));
                    break;
                }
            }
            break;
        }
    }
    if !started {
        return Err(bad_token());
    }
    Ok((entries, next_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backends as (name, sorted entry names), listed like a ledger page.
    type Fake = (&'static str, Vec<&'static str>);

    fn list(b: &Fake, after: Option<&str>, room: usize) -> Result<Part<String>> {
        let rest: Vec<String> =
            b.1.iter()
                .filter(|n| after.is_none_or(|a| **n > a))
                .map(|n| n.to_string())
                .collect();
        if room == 0 || rest.len() <= room {
            return Ok((rest, None));
        }
        let part = rest[..room].to_vec();
        let last = part.last().cloned();
        Ok((part, last))
    }

    fn all_pages(backends: &[Fake], max: usize) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let (entries, next) = page_across(backends, |b| b.0, &token, max, list).unwrap();
            pages.push(entries);
            if next.is_empty() {
                return pages;
            }
            token = next;
        }
    }

    #[test]
    fn pages_run_across_backends_and_skip_empty_ones() {
        let backends = [
            ("a", vec!["1", "2", "3"]),
            ("b", vec![]),
            ("c", vec!["4", "5"]),
        ];
        let pages = all_pages(&backends, 3);
        assert_eq!(pages, vec![vec!["1", "2", "3"], vec!["4", "5"]]);
        let pages = all_pages(&backends, 2);
        assert_eq!(pages, vec![vec!["1", "2"], vec!["3", "4"], vec!["5"]]);
        assert_eq!(all_pages(&backends, 0), vec![vec!["1", "2", "3", "4", "5"]]);
    }

    #[test]
    fn a_page_ending_with_the_last_backend_has_no_next_token() {
        let backends = [("a", vec!["1", "2"]), ("b", vec![])];
        assert_eq!(all_pages(&backends, 2), vec![vec!["1", "2"]]);
    }

    #[test]
    fn tokens_naming_no_served_backend_or_malformed_are_refused() {
        let backends = [("a", vec!["1"])];
        let foreign = convert::encode_token("zz/1");
        let err = page_across(&backends, |b| b.0, &foreign, 1, list).unwrap_err();
        assert!(matches!(err, Error::BadToken(_)), "{err:?}");
        let no_slash = convert::encode_token("a");
        let err = page_across(&backends, |b| b.0, &no_slash, 1, list).unwrap_err();
        assert!(matches!(err, Error::BadToken(_)), "{err:?}");
    }
}
