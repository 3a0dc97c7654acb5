//! Reused send buffers, for the upload engines (multipart parts, EBS blocks).

use std::sync::Arc;

/// Buffers the SDK sends, reused once it is done with them: memory stays at what is in
/// flight, and a buffer is zeroed only when it is first made (or grows).
#[derive(Clone, Default)]
pub(crate) struct Buffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// A buffer of `len` bytes (old contents, or zeros where it grew).
    pub(crate) fn take(&self, len: usize) -> Pooled {
        let mut buf = self.lock().pop().unwrap_or_default();
        buf.resize(len, 0);
        Pooled {
            buf,
            home: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer that goes back to its pool when dropped.
pub(crate) struct Pooled {
    buf: Vec<u8>,
    home: Buffers,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.home.lock().push(buf);
    }
}

impl AsMut<[u8]> for Pooled {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}
