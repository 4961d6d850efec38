//! Thin, checked wrappers over the few ONNX Runtime C API calls the bridge makes directly.
//!
//! Every function here requires the library to be loaded ([`super::environment`] succeeded);
//! callers guarantee that by only reaching these through a [`super::Session`].

use std::ffi::CStr;
use std::ptr::{self, NonNull};

use ort::sys::{
    ONNXTensorElementDataType, ONNXType, OrtAllocator, OrtStatusPtr, OrtTensorTypeAndShapeInfo,
    OrtValue,
};

/// Turns an `OrtStatus` into `Err(message)`, releasing it.
pub(crate) fn check(status: OrtStatusPtr) -> Result<(), String> {
    // SAFETY: `status` comes straight from an ORT API call; `result_from_status` takes it over.
    unsafe { ort::Error::result_from_status(status) }.map_err(|e| e.message().to_string())
}

/// ORT's default CPU allocator (process-wide, never released).
pub(crate) fn default_allocator() -> Result<*mut OrtAllocator, String> {
    let mut alloc = ptr::null_mut();
    // SAFETY: plain out-parameter call.
    check(unsafe { (ort::api().GetAllocatorWithDefaultOptions)(&mut alloc) })?;
    if alloc.is_null() {
        return Err("ONNX Runtime returned no default allocator".into());
    }
    Ok(alloc)
}

/// An `OrtValue` this code owns; released on drop.
pub(crate) struct OwnedValue(NonNull<OrtValue>);

impl OwnedValue {
    /// Takes ownership of a pointer ORT handed out; `None` for null.
    ///
    /// # Safety
    /// `ptr` must be null or an `OrtValue` nobody else releases.
    pub(crate) unsafe fn from_raw(ptr: *mut OrtValue) -> Option<OwnedValue> {
        NonNull::new(ptr).map(OwnedValue)
    }

    pub(crate) fn as_ptr(&self) -> *mut OrtValue {
        self.0.as_ptr()
    }

    /// False for an absent optional value (an `OrtValue` with nothing in it).
    pub(crate) fn has_value(&self) -> Result<bool, String> {
        let mut out = 0;
        // SAFETY: valid value pointer, out-parameter.
        check(unsafe { (ort::api().HasValue)(self.as_ptr(), &mut out) })?;
        Ok(out != 0)
    }

    /// Tensor, sequence, map, optional …
    pub(crate) fn onnx_type(&self) -> Result<ONNXType, String> {
        let mut out = ONNXType::ONNX_TYPE_UNKNOWN;
        // SAFETY: valid value pointer, out-parameter.
        check(unsafe { (ort::api().GetValueType)(self.as_ptr(), &mut out) })?;
        Ok(out)
    }

    /// Element type and dims of a tensor value.
    pub(crate) fn tensor_type_and_shape(
        &self,
    ) -> Result<(ONNXTensorElementDataType, Vec<i64>), String> {
        let mut info: *mut OrtTensorTypeAndShapeInfo = ptr::null_mut();
        // SAFETY: valid value pointer, out-parameter; the info is released below.
        check(unsafe { (ort::api().GetTensorTypeAndShape)(self.as_ptr(), &mut info) })?;
        if info.is_null() {
            return Err("ONNX Runtime returned no tensor shape".into());
        }
        let result = (|| {
            let api = ort::api();
            let mut ty = ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
            // SAFETY: `info` is valid until released below.
            check(unsafe { (api.GetTensorElementType)(info, &mut ty) })?;
            let mut rank = 0usize;
            check(unsafe { (api.GetDimensionsCount)(info, &mut rank) })?;
            let mut dims = vec![0i64; rank];
            check(unsafe { (api.GetDimensions)(info, dims.as_mut_ptr(), rank) })?;
            Ok((ty, dims))
        })();
        // SAFETY: created by GetTensorTypeAndShape above, released once.
        unsafe { (ort::api().ReleaseTensorTypeAndShapeInfo)(info) };
        result
    }

    /// The tensor's buffer (may be null for empty tensors).
    pub(crate) fn tensor_data(&self) -> Result<*mut std::ffi::c_void, String> {
        let mut data = ptr::null_mut();
        // SAFETY: valid value pointer, out-parameter.
        check(unsafe { (ort::api().GetTensorMutableData)(self.as_ptr(), &mut data) })?;
        Ok(data)
    }

    /// The byte strings of a string tensor of `n` elements.
    pub(crate) fn strings(&self, n: usize) -> Result<Vec<Vec<u8>>, String> {
        let api = ort::api();
        let mut total = 0usize;
        // SAFETY: valid string tensor; out-parameters sized as ORT asks.
        check(unsafe { (api.GetStringTensorDataLength)(self.as_ptr(), &mut total) })?;
        let mut content = vec![0u8; total];
        let mut offsets = vec![0usize; n];
        check(unsafe {
            (api.GetStringTensorContent)(
                self.as_ptr(),
                content.as_mut_ptr().cast(),
                total,
                offsets.as_mut_ptr(),
                n,
            )
        })?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let start = offsets[i];
            let end = if i + 1 < n { offsets[i + 1] } else { total };
            let bytes = content
                .get(start..end)
                .ok_or("ONNX Runtime returned inconsistent string offsets")?;
            out.push(bytes.to_vec());
        }
        Ok(out)
    }

    /// Number of items of a sequence (or 2 for a map: keys and values).
    pub(crate) fn count(&self) -> Result<usize, String> {
        let mut n = 0usize;
        // SAFETY: valid value pointer, out-parameter.
        check(unsafe { (ort::api().GetValueCount)(self.as_ptr(), &mut n) })?;
        Ok(n)
    }

    /// Item `i` of a sequence, as a new value this code owns.
    pub(crate) fn item(&self, i: usize) -> Result<OwnedValue, String> {
        let alloc = default_allocator()?;
        let index = i32::try_from(i).map_err(|_| "sequence index out of range".to_string())?;
        let mut out = ptr::null_mut();
        // SAFETY: valid sequence value, index < count, out-parameter owned below.
        check(unsafe { (ort::api().GetValue)(self.as_ptr(), index, alloc, &mut out) })?;
        // SAFETY: GetValue hands out a new value the caller must release.
        unsafe { OwnedValue::from_raw(out) }
            .ok_or_else(|| "ONNX Runtime returned no sequence item".into())
    }
}

impl Drop for OwnedValue {
    fn drop(&mut self) {
        // SAFETY: we own the value and release it exactly once.
        unsafe { (ort::api().ReleaseValue)(self.0.as_ptr()) };
    }
}

/// Creates an uninitialised tensor of `ty` and `dims` with ORT's default allocator.
pub(crate) fn create_tensor(
    ty: ONNXTensorElementDataType,
    dims: &[i64],
) -> Result<OwnedValue, String> {
    let alloc = default_allocator()?;
    let mut out = ptr::null_mut();
    // SAFETY: dims slice valid for the call; out-parameter owned below.
    check(unsafe {
        (ort::api().CreateTensorAsOrtValue)(alloc, dims.as_ptr(), dims.len(), ty, &mut out)
    })?;
    // SAFETY: CreateTensorAsOrtValue hands out a new value.
    unsafe { OwnedValue::from_raw(out) }.ok_or_else(|| "ONNX Runtime created no tensor".into())
}

/// Fills a string tensor from NUL-terminated strings.
pub(crate) fn fill_strings(value: &OwnedValue, strings: &[&CStr]) -> Result<(), String> {
    let ptrs: Vec<*const std::ffi::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    // SAFETY: `ptrs` point into `strings`, alive for the call; ORT copies them.
    check(unsafe { (ort::api().FillStringTensor)(value.as_ptr(), ptrs.as_ptr(), ptrs.len()) })
}

/// Builds a sequence value from tensors (ORT copies them).
pub(crate) fn create_sequence(items: &[OwnedValue]) -> Result<OwnedValue, String> {
    let ptrs: Vec<*const OrtValue> = items.iter().map(|v| v.as_ptr().cast_const()).collect();
    let mut out = ptr::null_mut();
    // SAFETY: item pointers valid for the call; out-parameter owned below.
    check(unsafe {
        (ort::api().CreateValue)(
            ptrs.as_ptr(),
            ptrs.len(),
            ONNXType::ONNX_TYPE_SEQUENCE,
            &mut out,
        )
    })?;
    // SAFETY: CreateValue hands out a new value.
    unsafe { OwnedValue::from_raw(out) }.ok_or_else(|| "ONNX Runtime created no sequence".into())
}
