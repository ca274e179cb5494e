//! Makes the SDK's retries visible: each retry is logged with the error that caused it, and an
//! operation that needed more than one attempt logs how many and how long it took in all. With
//! many nodes sharing the account's API buckets, throttling is the first thing an operator asks
//! about when a bootstrap is slow.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct RetryLog;

#[derive(Debug, Clone)]
struct Started(Instant);
impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

/// Why the last attempt failed, for the line that announces the next one.
#[derive(Debug, Clone)]
struct LastFailure(String, Option<u16>);
impl Storable for LastFailure {
    type Storer = StoreReplace<Self>;
}

fn names(cfg: &ConfigBag) -> (String, String) {
    cfg.load::<Metadata>().map_or_else(
        || ("aws".into(), "call".into()),
        |m| (m.service().to_lowercase(), m.name().to_string()),
    )
}

fn attempts(cfg: &ConfigBag) -> u32 {
    cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts())
}

/// The service's error code (`RequestLimitExceeded`, `SlowDown`: EC2 and S3 answer XML with a
/// `<Code>`, JSON services a `__type`), else the kind of failure; and the HTTP status.
fn describe(context: &FinalizerInterceptorContextRef<'_>) -> Option<(String, Option<u16>)> {
    let err = context.output_or_error()?.err()?;
    let response = context.response();
    let status = response.map(|r| r.status().as_u16());
    let code = response
        .and_then(|r| r.body().bytes())
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(error_code);
    let text = match (code, err.as_operation_error(), err.as_connector_error()) {
        (Some(code), _, _) => code,
        (None, Some(op), _) => op.to_string(),
        (None, None, Some(conn)) => format!("connection: {conn}"),
        (None, None, None) => err.to_string(),
    };
    Some((text, status))
}

fn error_code(body: &str) -> Option<String> {
    let between = |open: &str, close: &str| {
        let start = body.find(open)? + open.len();
        let len = body[start..].find(close)?;
        Some(body[start..start + len].trim().to_string())
    };
    let code = between("<Code>", "</Code>").or_else(|| {
        // JSON protocols: "__type": "ThrottlingException" (sometimes with a namespace prefix)
        let t = between("\"__type\"", ",").or_else(|| between("\"__type\"", "}"))?;
        let t = t.trim_start_matches([':', ' ']).trim_matches('"');
        Some(t.rsplit('#').next().unwrap_or(t).to_string())
    })?;
    (!code.is_empty() && code.len() < 128).then_some(code)
}

impl Intercept for RetryLog {
    fn name(&self) -> &'static str {
        "emrboot::RetryLog"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = attempts(cfg);
        if attempt > 1 {
            let (service, operation) = names(cfg);
            let (error, status) = cfg
                .load::<LastFailure>()
                .map_or((String::new(), None), |f| (f.0.clone(), f.1));
            tracing::warn!(%service, %operation, attempt, %error, status, "aws call retried");
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(why) = describe(context) {
            cfg.interceptor_state().store_put(LastFailure(why.0, why.1));
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempts = attempts(cfg);
        if attempts <= 1 {
            return Ok(());
        }
        let (service, operation) = names(cfg);
        let elapsed_ms = cfg
            .load::<Started>()
            .map_or(0, |s| s.0.elapsed().as_millis() as u64);
        match describe(context) {
            None => tracing::info!(
                %service, %operation, attempts, elapsed_ms,
                "aws call succeeded after retries"
            ),
            Some((error, status)) => tracing::warn!(
                %service, %operation, attempts, elapsed_ms, %error, status,
                "aws call failed after retries"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::error_code;

    #[test]
    fn codes_from_each_protocol() {
        let ec2 = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>";
        assert_eq!(error_code(ec2).as_deref(), Some("RequestLimitExceeded"));
        let s3 = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>x</Message></Error>";
        assert_eq!(error_code(s3).as_deref(), Some("SlowDown"));
        let json = r#"{"__type": "com.amazonaws.efs#ThrottlingException", "message": "x"}"#;
        assert_eq!(error_code(json).as_deref(), Some("ThrottlingException"));
        assert_eq!(error_code("<html>bad gateway</html>"), None);
    }
}
