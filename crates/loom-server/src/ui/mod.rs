//! The dashboard at `/ui`: static assets compiled into the binary (Preact and htm as ES modules,
//! no build step), served without a key. The data they show comes from the API, which needs one:
//! the page asks for the key, keeps it in `sessionStorage` and sends it as `Authorization: Bearer`.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;

/// One asset: its path under `/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the dashboard serves.
const ASSETS: &[Asset] = &[
    Asset { path: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("../../ui/index.html") },
    Asset { path: "style.css", content_type: "text/css; charset=utf-8", body: include_str!("../../ui/style.css") },
    Asset { path: "app.js", content_type: JS, body: include_str!("../../ui/app.js") },
    Asset { path: "api.js", content_type: JS, body: include_str!("../../ui/api.js") },
    Asset { path: "parts.js", content_type: JS, body: include_str!("../../ui/parts.js") },
    Asset { path: "runs.js", content_type: JS, body: include_str!("../../ui/runs.js") },
    Asset { path: "run.js", content_type: JS, body: include_str!("../../ui/run.js") },
    Asset { path: "views.js", content_type: JS, body: include_str!("../../ui/views.js") },
    Asset { path: "vendor/preact.mjs", content_type: JS, body: include_str!("../../ui/vendor/preact.mjs") },
    Asset { path: "vendor/hooks.mjs", content_type: JS, body: include_str!("../../ui/vendor/hooks.mjs") },
    Asset { path: "vendor/htm.mjs", content_type: JS, body: include_str!("../../ui/vendor/htm.mjs") },
];

/// The page's Content-Security-Policy: scripts, styles and requests from this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve(path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no dashboard file `{path}`"))
            .into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // The assets change with the binary: revalidate rather than cache stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if asset.path == "index.html" {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// `GET /ui`: to `/ui/`, so relative asset paths resolve.
pub(crate) async fn root() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
pub(crate) async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/{*path}`: an asset (the page for anything that is not one and has no extension, so a
/// reload of a deep link such as `/ui/runs` still shows the app).
pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    if !path.contains('.') && !path.starts_with("vendor/") {
        return serve("index.html");
    }
    serve(&path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS || a.path == "index.html") {
            for import in asset.body.split(['"', '\'']).filter(|s| s.starts_with("./") && s.ends_with("js")) {
                let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
                let target = import.trim_start_matches("./");
                let full = if dir.is_empty() { target.to_string() } else { format!("{dir}/{target}") };
                assert!(ASSETS.iter().any(|a| a.path == full), "{} imports {import}, which is not served", asset.path);
            }
        }
    }

    #[test]
    fn vendored_files_keep_their_licence_headers() {
        for name in ["vendor/preact.mjs", "vendor/hooks.mjs", "vendor/htm.mjs"] {
            let body = ASSETS.iter().find(|a| a.path == name).unwrap().body;
            assert!(body.starts_with("/*! "), "{name}");
            assert!(body.lines().next().unwrap().contains("License"), "{name}");
        }
    }
}
