//! The two list endpoints, in SignalWire's paged shape:
//! `{"links":{"self","first","next"?,"prev"?},"data":[...]}`.

use http::StatusCode;
use serde::Serialize;

use super::{
    reply::{self, ErrorEntry, ErrorReply, Reply},
    tokens::{Entropy, Subscriber},
};

/// One Fabric address.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Address {
    id: String,
    name: String,
    display_name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    cover_url: Option<String>,
    preview_url: Option<String>,
    channels: Channels,
}

#[derive(Debug, Clone, Serialize)]
struct Channels {
    audio: String,
    messaging: String,
    video: String,
}

impl Address {
    fn new(id: String, name: &str, display_name: &str, kind: &'static str, scope: &str) -> Self {
        let channel = |c: &str| format!("/{scope}/{name}?channel={c}");
        Self {
            channels: Channels {
                audio: channel("audio"),
                messaging: channel("messaging"),
                video: channel("video"),
            },
            id,
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            kind,
            cover_url: None,
            preview_url: None,
        }
    }

    /// The address every subscriber gets, named after the subscriber's id.
    pub(super) fn of_subscriber(subscriber: &Subscriber) -> Self {
        let display = subscriber
            .profile
            .display_name
            .as_deref()
            .unwrap_or(&subscriber.email);
        Self::new(
            subscriber.address_id.clone(),
            &subscriber.id,
            display,
            "subscriber",
            "private",
        )
    }
}

/// The public addresses of a fresh mock space, with ids of its own.
pub(super) fn directory(entropy: &mut Entropy) -> Vec<Address> {
    [
        ("lobby", "Lobby", "room"),
        ("support", "Support", "room"),
        ("welcome", "Welcome Bot", "app"),
    ]
    .into_iter()
    .map(|(name, display, kind)| Address::new(entropy.uuid(), name, display, kind, "public"))
    .collect()
}

/// The default and largest `page_size`.
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// Which slice of a list a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Page {
    size: usize,
    offset: usize,
}

impl Page {
    /// Reads `page_size` (1 to 1000, default 50) and `page_token` (as returned in `next` and
    /// `prev` links) from the query; other parameters are ignored.
    pub(super) fn from_query(query: Option<&str>) -> Result<Self, ErrorReply> {
        let mut page = Self {
            size: DEFAULT_PAGE_SIZE,
            offset: 0,
        };
        let mut problems = Vec::new();
        for pair in query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "page_size" => match value.parse::<usize>() {
                    Ok(size @ 1..=MAX_PAGE_SIZE) => page.size = size,
                    _ => problems.push(ErrorEntry::invalid(
                        "page_size",
                        "invalid_parameter",
                        format!("page_size must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    )),
                },
                "page_token" => match value.strip_prefix("PA").and_then(|n| n.parse().ok()) {
                    Some(offset) => page.offset = offset,
                    None => problems.push(ErrorEntry::invalid(
                        "page_token",
                        "invalid_parameter",
                        "page_token is not one this server issued",
                    )),
                },
                _ => {}
            }
        }
        if problems.is_empty() {
            Ok(page)
        } else {
            Err(reply::invalid(&problems).into())
        }
    }

    fn link(&self, path: &str, offset: usize) -> String {
        if offset == 0 {
            format!("{path}?page_size={}", self.size)
        } else {
            format!("{path}?page_size={}&page_token=PA{offset}", self.size)
        }
    }

    /// The paged answer holding this page of `items`.
    pub(super) fn answer<T: Serialize>(&self, path: &str, items: &[T]) -> Reply {
        #[derive(Serialize)]
        struct Links {
            #[serde(rename = "self")]
            this: String,
            first: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            next: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            prev: Option<String>,
        }
        #[derive(Serialize)]
        struct Paged<'a, T> {
            links: Links,
            data: &'a [T],
        }
        let start = self.offset.min(items.len());
        let end = start.saturating_add(self.size).min(items.len());
        let links = Links {
            this: self.link(path, self.offset),
            first: self.link(path, 0),
            next: (end < items.len()).then(|| self.link(path, end)),
            prev: (start > 0).then(|| self.link(path, start.saturating_sub(self.size))),
        };
        reply::json(
            StatusCode::OK,
            &Paged {
                links,
                data: &items[start..end],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use serde_json::Value;

    use super::*;

    fn values(n: usize) -> Vec<Value> {
        (0..n).map(Value::from).collect()
    }

    async fn body(reply: Reply) -> Value {
        let bytes = reply.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn pages_walk_the_whole_list_once() {
        let items = values(5);
        let mut query = Some("page_size=2".to_owned());
        let mut seen = Vec::new();
        while let Some(q) = query.take() {
            let page = Page::from_query(Some(&q)).unwrap();
            let json = body(page.answer("/x", &items)).await;
            seen.extend(json["data"].as_array().unwrap().iter().cloned());
            assert_eq!(json["links"]["first"], "/x?page_size=2");
            query = json["links"]["next"]
                .as_str()
                .map(|next| next.split_once('?').unwrap().1.to_owned());
        }
        assert_eq!(seen, items);
    }

    #[tokio::test]
    async fn past_the_end_is_an_empty_page() {
        let page = Page::from_query(Some("page_token=PA99&page_size=3")).unwrap();
        let json = body(page.answer("/x", &values(4))).await;
        assert_eq!(json["data"], serde_json::json!([]));
        assert!(json["links"].get("next").is_none());
        assert_eq!(json["links"]["prev"], "/x?page_size=3&page_token=PA1");
    }

    #[test]
    fn bad_paging_parameters_are_422() {
        for q in [
            "page_size=0",
            "page_size=1001",
            "page_size=x",
            "page_size",
            "page_token=",
            "page_token=PA-1",
            "page_token=XX1",
        ] {
            let reply = Page::from_query(Some(q)).unwrap_err().into_reply();
            assert_eq!(reply.status(), StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        }
        assert!(Page::from_query(Some("")).is_ok());
        assert!(Page::from_query(Some("type=room&page_number=0")).is_ok());
    }
}
