//! `kubectl aexec ui`: the review console, a web page this process serves on 127.0.0.1.
//!
//! The page (`plugin/ui/`, compiled in: [`assets`]) talks to a small JSON API ([`api`]) that
//! does what the other commands do, with the same client: the user's kubeconfig credentials.
//! The console adds no identity and no power; the API server and the operator decide every
//! read and every approval as they do for the command line. Who may talk to it at all is
//! [`auth`]: a one-time token in the printed URL, traded for a cookie.

mod api;
pub mod assets;
pub mod auth;
pub mod live;

use std::{net::Ipv4Addr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{
    cli::{Global, UiArgs},
    connect::{self, Conn},
    error::{Error, Result},
};

/// What every handler shares.
#[derive(Debug)]
struct Ui {
    conn: Conn,
    token: String,
    port: u16,
    user: aexec_crds::UserRef,
    context: String,
    /// The namespace pages start on ('' for all).
    start_namespace: String,
}

/// Serves the console until interrupted.
pub async fn serve(conn: &Conn, global: &Global, a: &UiArgs) -> Result<i32> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, a.port.unwrap_or(0)))
        .await
        .map_err(|e| {
            Error::Io(format!(
                "cannot listen on 127.0.0.1:{}: {e}{}",
                a.port.unwrap_or(0),
                if a.port.is_some() {
                    "; choose another --port, or leave it out for a free one"
                } else {
                    ""
                }
            ))
        })?;
    let port = listener.local_addr()?.port();
    // Who we are, once: shown in the page, and a check that the credentials work at all.
    let user = connect::whoami(&conn.client).await?;
    let context = match &global.context {
        Some(c) => c.clone(),
        None => connect::load_kubeconfig(global)?
            .current_context
            .unwrap_or_default(),
    };
    let ui = Arc::new(Ui {
        conn: conn.clone(),
        token: auth::new_token()?,
        port,
        user,
        context,
        start_namespace: if a.all_namespaces {
            String::new()
        } else {
            conn.namespace.clone()
        },
    });
    let url = format!("http://127.0.0.1:{port}/?token={}", ui.token);
    eprintln!(
        "The aexec console is at the URL below, acting as {} (context {:?}). It answers on \
         127.0.0.1 only; the token in the URL is the key: do not share it. Ctrl-C stops it.",
        ui.user.username, ui.context
    );
    crate::error::out(&format!("{url}\n"))?;
    if !a.no_browser
        && crate::terminal::stdout_is_terminal()
        && let Err(e) = open::that_detached(&url)
    {
        eprintln!("could not open a browser ({e}): open the URL yourself");
    }
    let app = router(ui);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::Io(format!("the console stopped: {e}")))?;
    Ok(0)
}

fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/api/whoami", get(api::whoami))
        .route("/api/sessions", get(api::sessions))
        .route("/api/events", get(api::events))
        .route("/api/sessions/{ns}/{name}", get(api::session))
        .route("/api/sessions/{ns}/{name}/verify", get(api::verify))
        .route("/api/sessions/{ns}/{name}/recording", get(api::recording))
        .route("/api/sessions/{ns}/{name}/live", get(api::live))
        .route("/api/sessions/{ns}/{name}/approve", post(api::approve))
        .route("/api/sessions/{ns}/{name}/deny", post(api::deny))
        .route("/api/search", get(api::search))
        .fallback(|| async { api::problem(StatusCode::NOT_FOUND, "no such page in the console") })
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// Every request passes [`auth::decide`]; every answer gets the security headers.
async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    let verdict = auth::decide(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
        &ui.token,
        ui.port,
    );
    let mut res = match verdict {
        auth::Verdict::Allow => next.run(req).await,
        auth::Verdict::Welcome { location, cookie } => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, location)
            .header(header::SET_COOKIE, cookie)
            .body(Body::empty())
            .unwrap_or_default(),
        auth::Verdict::Refuse(status, message) => api::problem(status, &message),
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The first URL holds the token: never send it on as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn index() -> Response {
    serve_asset(assets::INDEX)
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match assets::asset(&name) {
        Some(a) => serve_asset(a),
        None => api::problem(StatusCode::NOT_FOUND, "no such asset"),
    }
}

fn serve_asset(a: assets::Asset) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        )],
        a.bytes,
    )
        .into_response()
}
