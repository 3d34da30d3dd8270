//! End-to-end OTLP export: `Telemetry` pointed at the testkit's OTLP receiver over
//! HTTP/protobuf and over gRPC (real protobuf decoding on the receiving side), and at a closed
//! port to prove that an unreachable collector never blocks the caller and is counted.

use std::time::{Duration, Instant};

use modgate_telemetry::{KeyValue, OtelConfig, OtlpProtocol, Telemetry, DENY_SPAN_NAME};
use modgate_testkit::OtlpReceiver;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn config(endpoint: String, protocol: OtlpProtocol) -> OtelConfig {
    OtelConfig {
        endpoint: Some(endpoint),
        protocol: Some(protocol),
        service_name: "modgate-it".into(),
        sample_ratio: 0.0,
        timeout: Duration::from_secs(3),
        headers: vec![("x-modgate-test".into(), "yes".into())],
    }
}

fn export_one_deny_span(protocol: OtlpProtocol) {
    let rx = OtlpReceiver::start();
    let endpoint = match protocol {
        OtlpProtocol::HttpProtobuf => rx.http_endpoint(),
        OtlpProtocol::Grpc => rx.grpc_endpoint(),
    };
    let t = Telemetry::start_with_env(config(endpoint, protocol), |_| None)
        .expect("start")
        .expect("endpoint configured");

    let cx = Telemetry::extract(
        Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01")),
        Some("vendor=v1"),
    );
    assert_eq!(Telemetry::trace_id_for(&cx), TRACE_ID);
    t.deny_span(
        &cx,
        vec![
            KeyValue::new("modgate.rule", "deny-bad"),
            KeyValue::new("modgate.module", "example.com/bad"),
            KeyValue::new("http.response.status_code", 403_i64),
            KeyValue::new("modgate.cached", false),
        ],
        "rule deny-bad matched",
    );
    t.flush().expect("flush");

    let spans = rx.wait_for_spans(1, Duration::from_secs(10));
    // Give a stray duplicate the chance to show up before asserting "exactly one".
    std::thread::sleep(Duration::from_millis(200));
    let spans = if spans.len() == 1 { rx.spans() } else { spans };
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0];
    assert_eq!(s.name, DENY_SPAN_NAME);
    assert_eq!(s.trace_id, TRACE_ID);
    assert_eq!(s.parent_span_id, PARENT_ID);
    assert_eq!(s.span_id.len(), 16);
    assert_ne!(s.span_id, PARENT_ID);
    assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(s.status_code, 2, "STATUS_CODE_ERROR");
    assert_eq!(s.status_message, "rule deny-bad matched");
    assert_eq!(s.attributes["modgate.rule"], "deny-bad");
    assert_eq!(s.attributes["modgate.module"], "example.com/bad");
    assert_eq!(s.attributes["http.response.status_code"], "403");
    assert_eq!(s.attributes["modgate.cached"], "false");
    assert_eq!(s.resource["service.name"], "modgate-it");
    let transport = match protocol {
        OtlpProtocol::HttpProtobuf => "http",
        OtlpProtocol::Grpc => "grpc",
    };
    assert_eq!(s.transport, transport);

    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0]
            .headers
            .iter()
            .any(|(n, v)| n == "x-modgate-test" && v == "yes"),
        "{:?}",
        requests[0].headers
    );
    if protocol == OtlpProtocol::HttpProtobuf {
        assert_eq!(requests[0].path, "/v1/traces");
    }

    assert_eq!(t.exported_spans(), 1);
    assert_eq!(t.dropped_spans(), 0);
    t.shutdown();
}

#[test]
fn deny_span_over_http_protobuf() {
    export_one_deny_span(OtlpProtocol::HttpProtobuf);
}

#[test]
fn deny_span_over_grpc() {
    export_one_deny_span(OtlpProtocol::Grpc);
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

fn unreachable_collector(protocol: OtlpProtocol) {
    let mut cfg = config(format!("http://127.0.0.1:{}", closed_port()), protocol);
    cfg.timeout = Duration::from_secs(2);
    let t = Telemetry::start_with_env(cfg, |_| None)
        .expect("start")
        .expect("endpoint configured");
    let cx = Telemetry::extract(None, None);

    let started = Instant::now();
    for _ in 0..10 {
        t.deny_span(&cx, vec![KeyValue::new("modgate.rule", "r")], "denied");
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_millis(100),
        "deny_span blocked: {spent:?}"
    );

    let started = Instant::now();
    assert!(t.flush().is_err(), "export to a closed port cannot succeed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "flush not bounded"
    );
    // The count is updated when the failed export returns (at the latest at its timeout).
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.dropped_spans() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.dropped_spans() >= 1);
    assert_eq!(t.dropped_spans(), 10);
    assert_eq!(t.exported_spans(), 0);

    let started = Instant::now();
    t.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown not bounded"
    );
}

#[test]
fn unreachable_collector_http() {
    unreachable_collector(OtlpProtocol::HttpProtobuf);
}

#[test]
fn unreachable_collector_grpc() {
    unreachable_collector(OtlpProtocol::Grpc);
}

/// Pingora calls into telemetry from its own runtime threads: starting, emitting, flushing
/// and dropping from inside a tokio runtime must neither panic nor deadlock.
#[tokio::test(flavor = "current_thread")]
async fn usable_from_inside_a_foreign_runtime() {
    let rx = OtlpReceiver::start();
    let t = Telemetry::start_with_env(config(rx.grpc_endpoint(), OtlpProtocol::Grpc), |_| None)
        .expect("start")
        .expect("endpoint configured");
    let cx = Telemetry::extract(None, None);
    t.deny_span(&cx, vec![], "denied");
    t.flush().expect("flush");
    let spans = rx.wait_for_spans(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id, Telemetry::trace_id_for(&cx));
    assert_eq!(spans[0].parent_span_id, "");
    drop(t);
}

/// Request spans: sampled at ratio 1, carried upstream via `traceparent`, exported with the
/// response status.
#[test]
fn request_span_over_http_protobuf() {
    let rx = OtlpReceiver::start();
    let mut cfg = config(rx.http_endpoint(), OtlpProtocol::HttpProtobuf);
    cfg.sample_ratio = 1.0;
    let t = Telemetry::start_with_env(cfg, |_| None)
        .expect("start")
        .expect("endpoint configured");
    let cx = Telemetry::extract(Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01")), None);
    let mut span = t
        .start_request_span(&cx, "GET", &[KeyValue::new("http.request.method", "GET")])
        .expect("sampled");
    let tp = span.traceparent();
    assert!(
        tp.starts_with(&format!("00-{TRACE_ID}-")) && tp.ends_with("-01"),
        "{tp}"
    );
    span.set_attr(KeyValue::new("modgate.route", "default"));
    span.end(200);
    t.flush().expect("flush");
    let spans = rx.wait_for_spans(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "GET");
    assert_eq!(spans[0].parent_span_id, PARENT_ID);
    assert_eq!(&tp[36..52], spans[0].span_id);
    assert_eq!(spans[0].attributes["http.response.status_code"], "200");
    assert_eq!(spans[0].attributes["modgate.route"], "default");
    assert_eq!(spans[0].status_code, 0);
}
