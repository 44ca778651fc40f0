//! OTLP/gRPC: the three collector `Export` services (tonic, with gzip) on
//! `otlp_grpc_listen`. The tenant comes from the `authorization` metadata
//! (`Bearer <token>`), as OTLP/HTTP takes it from the header; the rest is
//! [`super::export`], answered with [`Refusal::grpc_status`].
//!
//! With TLS (`tls_cert_file`), connections are accepted through
//! [`super::grpc_tls`]: handshakes run beside each other, each bounded in
//! time, and a client certificate is required when `tls_client_ca_file` is
//! set.
//!
//! Limits: a message over `max_inflated_bytes` (inflated) is refused by
//! tonic before it is decoded; each connection runs at most
//! [`STREAMS_PER_CONNECTION`] calls at once; the decoded message and its
//! records are charged to the tenant's share of the memory budget.

use super::answer::Refusal;
use super::{export, limits, Export, ExportRequest, Exported, INLINE_DECODE_BYTES};
use crate::Intake;
use config::tokens::{bearer, Role};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use protocol::ErrorCode;
use std::future::Future;
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// Resolves a bearer token to its principal (the broker's token table).
pub type Authenticate = Arc<dyn Fn(&str) -> Option<Role> + Send + Sync>;

/// Calls one connection may run at once (HTTP/2 streams).
pub const STREAMS_PER_CONNECTION: u32 = 64;

/// The three services' shared state.
#[derive(Clone)]
pub struct Receiver {
    intake: Arc<Intake>,
    auth: Authenticate,
}

impl Receiver {
    /// A receiver appending through `intake`, its tokens resolved by `auth`.
    pub fn new(intake: Arc<Intake>, auth: Authenticate) -> Self {
        Receiver { intake, auth }
    }

    fn refusal(&self, code: ErrorCode, message: &str) -> Status {
        Refusal::new(code, message.to_string(), None, self.intake.cfg.retry_after_secs).grpc_status()
    }

    /// The tenant the `authorization` metadata names.
    fn tenant(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Arc<crate::intake::Tenant>, Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let role = bearer(header).and_then(|token| (self.auth)(token));
        // A tenant a reload removed after its token resolved: unknown now.
        let tenant = match role {
            Some(Role::Tenant(id)) => self.intake.tenant(id),
            _ => None,
        };
        match (role, tenant) {
            (_, Some(tenant)) => Ok(tenant),
            (Some(Role::Admin | Role::Exporter(_)), None) => Err(self.refusal(
                ErrorCode::Forbidden,
                "this token belongs to an exporter or the admin; OTLP export takes a tenant's token",
            )),
            (Some(Role::Tenant(_)) | None, None) => Err(self.refusal(
                ErrorCode::Unauthorized,
                "missing or unknown token: send the tenant's token as `authorization: Bearer <token>` metadata",
            )),
        }
    }

    /// One export: authenticate, charge, split, append.
    async fn run(&self, metadata: &tonic::metadata::MetadataMap, request: ExportRequest) -> Result<Exported, Status> {
        let arrival = self.intake.wal().announce();
        let tenant = self.tenant(metadata)?;
        let retry = self.intake.cfg.retry_after_secs;
        let refuse = |e: crate::AcceptError| Refusal::of(&e, retry).grpc_status();
        let size = encoded_len(&request);
        let mut charge = crate::memory::Charge::default();
        // The decoded message and the frame built from it.
        self.intake.memory().charge_for(Some(&tenant.memory_held), &mut charge, 2 * size as u64).map_err(refuse)?;
        let limits = limits(&self.intake);
        let signal = request.signal();
        let items = if size <= INLINE_DECODE_BYTES {
            request.split(limits)
        } else {
            tokio::task::spawn_blocking(move || request.split(limits))
                .await
                .map_err(|source| crate::AcceptError::TaskFailed { what: "splitting OTLP", source })
                .and_then(|r| r)
        }
        .map_err(refuse)?;
        self.intake.memory().charge_for(Some(&tenant.memory_held), &mut charge, items.bytes).map_err(refuse)?;
        let call = Export {
            tenant,
            signal,
            items,
            media_type: "application/grpc",
            inflated_body: &[],
            idempotency_key: None,
            arrival,
        };
        export(&self.intake, call).await.map_err(refuse)
    }

    fn partial(&self, signal: super::Signal, exported: &Exported) -> Option<(i64, String)> {
        (exported.rejected > 0).then(|| {
            let message = super::answer::partial_message(signal, exported, self.intake.cfg.max_record_bytes);
            (i64::try_from(exported.rejected).unwrap_or(i64::MAX), message)
        })
    }
}

fn encoded_len(request: &ExportRequest) -> usize {
    match request {
        ExportRequest::Logs(r) => r.encoded_len(),
        ExportRequest::Traces(r) => r.encoded_len(),
        ExportRequest::Metrics(r) => r.encoded_len(),
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let exported = self.run(&metadata, ExportRequest::Logs(message)).await?;
        let partial_success = self.partial(super::Signal::Logs, &exported).map(|(rejected, error_message)| {
            ExportLogsPartialSuccess { rejected_log_records: rejected, error_message }
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let exported = self.run(&metadata, ExportRequest::Traces(message)).await?;
        let partial_success = self
            .partial(super::Signal::Traces, &exported)
            .map(|(rejected, error_message)| ExportTracePartialSuccess { rejected_spans: rejected, error_message });
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let exported = self.run(&metadata, ExportRequest::Metrics(message)).await?;
        let partial_success = self.partial(super::Signal::Metrics, &exported).map(|(rejected, error_message)| {
            ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message }
        });
        Ok(Response::new(ExportMetricsServiceResponse { partial_success }))
    }
}

/// Serve the three services on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Receiver,
    tls: Option<Arc<plumbing::tls::LiveTls>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max = usize::try_from(receiver.intake.cfg.max_inflated_bytes).unwrap_or(usize::MAX);
    let logs = LogsServiceServer::new(receiver.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let traces = TraceServiceServer::new(receiver.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let metrics = MetricsServiceServer::new(receiver)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(STREAMS_PER_CONNECTION as usize)
        .add_service(logs)
        .add_service(traces)
        .add_service(metrics);
    match tls {
        None => {
            router.serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown).await
        }
        Some(tls) => router.serve_with_incoming_shutdown(super::grpc_tls::incoming(listener, tls), shutdown).await,
    }
}
