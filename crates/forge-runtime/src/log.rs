//! The bounded log of one call: `log_info` / `log_error` lines and WASI stdout / stderr.

use forge_model::{LogLevel, LogLine};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most lines one call keeps, however short: an empty line costs host memory too.
pub const MAX_LOG_LINES: usize = 1000;
/// What each kept line costs against the byte budget besides its text (its place in the list), so
/// that a flood of empty lines exhausts the budget as well.
pub const LOG_LINE_OVERHEAD_BYTES: usize = 32;

/// What a call logged, capped at [`MAX_LOG_LINES`] and a byte budget; lines past either are dropped
/// and counted, whether they came from `log_info` / `log_error` or from WASI stdout / stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLog {
    pub lines: Vec<LogLine>,
    pub dropped_bytes: u64,
    #[serde(default)]
    pub dropped_lines: u64,
}

/// The log being written during a call. Shared with the WASI output streams, hence the mutex
/// (uncontended: one call runs on one thread).
#[derive(Clone)]
pub(crate) struct SharedLog(Arc<Mutex<LogState>>);

struct LogState {
    log: CallLog,
    budget: usize,
    /// Unterminated text written to stdout / stderr, completed by a later newline or at the end.
    partial: [Vec<u8>; 2],
}

impl SharedLog {
    pub(crate) fn new(budget: usize) -> Self {
        SharedLog(Arc::new(Mutex::new(LogState {
            log: CallLog::default(),
            budget,
            partial: Default::default(),
        })))
    }

    /// Appends one line (lossy UTF-8), or counts it as dropped when over budget.
    pub(crate) fn push(&self, level: LogLevel, bytes: &[u8]) {
        self.0.lock().push(level, bytes);
    }

    /// Appends stream output, splitting it into lines.
    pub(crate) fn write_stream(&self, level: LogLevel, bytes: &[u8]) {
        let mut state = self.0.lock();
        let slot = level as usize;
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut state.partial[slot]);
            line.extend_from_slice(&rest[..newline]);
            state.push(level, &line);
            rest = &rest[newline + 1..];
        }
        // Keep at most what the remaining budget can hold as one line; count the rest as dropped.
        let room = state.budget.saturating_sub(LOG_LINE_OVERHEAD_BYTES + state.partial[slot].len());
        let kept = rest.len().min(room);
        state.partial[slot].extend_from_slice(&rest[..kept]);
        state.log.dropped_bytes += (rest.len() - kept) as u64;
    }

    /// WASI preview 1 for one call, locked down: no args, no env, no sockets, only the call's file
    /// mounts as preopens; stdout and stderr write to this log.
    pub(crate) fn wasi_context(
        &self,
        preopens: &[(std::path::PathBuf, String, wasmtime_wasi::FsPerms)],
    ) -> std::io::Result<wasmtime_wasi::p1::WasiP1Ctx> {
        use wasi_stream::LogStream;
        let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
        builder
            .stdout(LogStream { log: self.clone(), level: LogLevel::Info })
            .stderr(LogStream { log: self.clone(), level: LogLevel::Error });
        for (host_dir, guest_path, perms) in preopens {
            builder
                .preopened_dir(host_dir, guest_path, *perms)
                .map_err(|e| std::io::Error::other(format!("{}: {e:#}", host_dir.display())))?;
        }
        Ok(builder.build_p1())
    }

    /// The finished log, with any unterminated stream output as a last line.
    pub(crate) fn finish(self) -> CallLog {
        let mut state = self.0.lock();
        for level in [LogLevel::Info, LogLevel::Error] {
            let line = std::mem::take(&mut state.partial[level as usize]);
            if !line.is_empty() {
                state.push(level, &line);
            }
        }
        std::mem::take(&mut state.log)
    }
}

impl LogState {
    fn push(&mut self, level: LogLevel, bytes: &[u8]) {
        let cost = bytes.len() + LOG_LINE_OVERHEAD_BYTES;
        if cost > self.budget || self.log.lines.len() >= MAX_LOG_LINES {
            self.log.dropped_bytes += bytes.len() as u64;
            self.log.dropped_lines += 1;
            return;
        }
        self.budget -= cost;
        let message = String::from_utf8_lossy(bytes).into_owned();
        self.log.lines.push(LogLine { level, message, at: forge_model::log_time() });
    }
}

/// WASI stdout / stderr of a call, feeding its log.
mod wasi_stream {
    use super::{LogLevel, SharedLog};
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
    use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

    #[derive(Clone)]
    pub(super) struct LogStream {
        pub(super) log: SharedLog,
        pub(super) level: LogLevel,
    }

    impl IsTerminal for LogStream {
        fn is_terminal(&self) -> bool {
            false
        }
    }

    impl StdoutStream for LogStream {
        fn p2_stream(&self) -> Box<dyn OutputStream> {
            Box::new(self.clone())
        }
        fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
            Box::new(self.clone())
        }
    }

    /// Always ready and never full: output past the log budget is dropped and counted, not refused,
    /// so a chatty guest is never failed for logging.
    #[wasmtime_wasi::async_trait]
    impl Pollable for LogStream {
        async fn ready(&mut self) {}
    }

    impl OutputStream for LogStream {
        fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
            self.log.write_stream(self.level, &bytes);
            Ok(())
        }
        fn flush(&mut self) -> StreamResult<()> {
            Ok(())
        }
        fn check_write(&mut self) -> StreamResult<usize> {
            Ok(usize::MAX)
        }
    }

    impl tokio::io::AsyncWrite for LogStream {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.log.write_stream(self.level, buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_budget_are_dropped_and_counted() {
        // Room for "hello" and "world" with their overhead, not for the line between them.
        let log = SharedLog::new(2 * LOG_LINE_OVERHEAD_BYTES + 10);
        log.push(LogLevel::Info, b"hello");
        log.push(LogLevel::Error, b"too long line");
        log.push(LogLevel::Info, b"world");
        log.push(LogLevel::Info, b"!");
        let log = log.finish();
        assert_eq!(log.lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["hello", "world"]);
        assert_eq!((log.dropped_bytes, log.dropped_lines), (14, 2));
    }

    #[test]
    fn stream_output_is_split_into_lines() {
        let log = SharedLog::new(4 * LOG_LINE_OVERHEAD_BYTES + 10);
        log.write_stream(LogLevel::Info, b"a\nb");
        log.write_stream(LogLevel::Error, b"err\n");
        log.write_stream(LogLevel::Info, b"c\nd");
        let log = log.finish();
        let lines: Vec<_> = log.lines.iter().map(|l| (l.level, l.message.as_str())).collect();
        assert_eq!(
            lines,
            [(LogLevel::Info, "a"), (LogLevel::Error, "err"), (LogLevel::Info, "bc"), (LogLevel::Info, "d")]
        );
    }

    #[test]
    fn endless_unterminated_stream_stays_bounded() {
        let log = SharedLog::new(LOG_LINE_OVERHEAD_BYTES + 16);
        for _ in 0..1000 {
            log.write_stream(LogLevel::Info, b"xxxxxxxx");
        }
        let log = log.finish();
        assert_eq!(log.lines.len(), 1);
        assert_eq!(log.lines[0].message.len(), 16);
        assert_eq!(log.dropped_bytes, 8000 - 16);
    }
}
