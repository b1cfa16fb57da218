//! Tag listing (`GET /v2/NAME/tags/list`), page by page as the
//! distribution spec says: `?n=` asks for a page size, and a `Link:
//! <…>; rel="next"` header names the next page (it carries `last=`).

use super::client::{read_bounded, Client, RegistryError, Result, Scope};
use reqwest::header::LINK;
use reqwest::Url;

/// A page of tags is small JSON; a bigger answer is refused.
const MAX_PAGE: u64 = 16 << 20;
/// A registry whose `Link`s never end is not followed forever.
const MAX_PAGES: usize = 100_000;

#[derive(serde::Deserialize)]
struct Page {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(h: &str) -> Option<&str> {
    h.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// Every tag of `repo`, in the registry's order, asking for pages of
/// `page_size`.
pub fn list(client: &Client, repo: &str, page_size: usize) -> Result<Vec<String>> {
    let scope = Scope::pull(repo);
    let mut url = client.url(&format!("/v2/{repo}/tags/list?n={}", page_size.max(1)));
    let mut tags = Vec::new();
    for _ in 0..MAX_PAGES {
        let resp = client.send("GET", &url, &scope, &|h| Ok(h.get(&url)))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::Protocol(format!(
                "{}/{repo}: no such repository (404)",
                client.registry
            )));
        }
        if !resp.status().is_success() {
            return Err(client.status_error("GET", &url, resp));
        }
        let next = resp
            .headers()
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .map(|l| client.url(l));
        let (body, more) = read_bounded(resp, MAX_PAGE).map_err(|e| {
            RegistryError::Protocol(format!("GET {url}: reading the tag list: {e}"))
        })?;
        if more {
            return Err(RegistryError::Protocol(format!(
                "GET {url}: a tag list page larger than {MAX_PAGE} bytes; refusing it"
            )));
        }
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Protocol(format!("GET {url}: not a tag list: {e}")))?;
        tags.extend(page.tags.unwrap_or_default());
        let Some(n) = next else {
            return Ok(tags);
        };
        // Credentials go only to the registry itself.
        if !Url::parse(&n).is_ok_and(|u| client.is_own(&u)) {
            return Err(RegistryError::Protocol(format!(
                "GET {url}: the next page is on another origin ({n}); refusing to follow"
            )));
        }
        url = n;
    }
    Err(RegistryError::Protocol(format!(
        "{}/{repo}: more than {MAX_PAGES} pages of tags; giving up",
        client.registry
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_headers() {
        assert_eq!(
            super::next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            super::next_link(r#"<https://x/prev>; rel="prev", <https://x/n>; rel=next"#),
            Some("https://x/n")
        );
        assert_eq!(super::next_link(r#"<https://x/p>; rel="prev""#), None);
    }
}
