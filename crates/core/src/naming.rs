//! Names of the objects a RayService owns, as KubeRay forms them.

use rand::Rng;

/// The alphabet of Kubernetes' `generateName` suffixes (no vowels, no look-alike digits).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Name of a new cluster of RayService `service`: `S-raycluster-xxxxx`.
pub fn cluster_name(service: &str, suffix: &str) -> String {
    format!("{service}-raycluster-{suffix}")
}

/// The Gateway of RayService `service` for incremental upgrades: `S-gateway`.
pub fn gateway_name(service: &str) -> String {
    format!("{service}-gateway")
}

/// The HTTPRoute of RayService `service` for incremental upgrades: `S-httproute`.
pub fn http_route_name(service: &str) -> String {
    format!("{service}-httproute")
}

/// The Serve service of one cluster, the HTTPRoute's backend during incremental upgrades:
/// `C-serve-svc` (the RayService's own stays `S-serve-svc`).
pub fn serve_service_name(cluster: &str) -> String {
    format!("{cluster}-serve-svc")
}

/// A random 5-character suffix for a cluster or node name. The decision itself never draws
/// one: the platform hands it in ([`crate::Observed::fresh_suffix`]), so the decision stays
/// deterministic.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn suffixes_look_like_kubernetes_ones() {
        let suffix = super::random_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| super::SUFFIX_ALPHABET.contains(&b)));
        assert_eq!(
            super::cluster_name("s", &suffix),
            format!("s-raycluster-{suffix}")
        );
    }
}
