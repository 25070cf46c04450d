//! A small HTTP upstream for examples, demos and benchmarks: it answers every request with a
//! JSON description of what it received (or with a fixed body).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Serves until the process ends. With `fixed`, every answer is that text (benchmarks);
/// otherwise a JSON echo of method, path, query, headers and body, tagged with `name`.
pub async fn serve(addr: SocketAddr, name: String, fixed: Option<String>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("echo upstream `{name}` listening on http://{}", listener.local_addr()?);
    let name: Arc<str> = Arc::from(name);
    let fixed: Option<Bytes> = fixed.map(Bytes::from);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let fixed = fixed.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, name.clone(), fixed.clone()));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn answer(req: Request<Incoming>, name: Arc<str>, fixed: Option<Bytes>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(body) = fixed {
        let mut resp = Response::new(Full::new(body));
        resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        headers.insert(k.as_str().to_owned(), serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
    }
    let json = serde_json::json!({
        "upstream": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    Ok(resp)
}
