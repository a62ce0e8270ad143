pub fn extract_text(_filename: &str, bytes: &[u8]) -> crate::error::Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| crate::error::Error::invalid_request("binary"))
}
