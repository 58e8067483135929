/// Shaped like the shipped sample: four tiers, endpoint rules in both forms, a tier of several
/// windows, a shadowed rule, every optional section.
pub(crate) const SAMPLE: &str = r#"
enabled: true
default_tier: free
fail_open: true
tiers:
  - name: free
    requests_per_window: 100
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 50
      /api/v1/health: 80
      /api/v1/admin/*: 10
    description: Unauthenticated and free users
  - name: premium
    requests_per_window: 1000
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 500
  - name: enterprise
    limits:
      - {limit: 100, window_seconds: 1}
      - {limit: 10000, window_seconds: 3600}
    endpoints:
      /api/v1/search:
        limits:
          - {limit: 5, window_seconds: 1}
          - {limit: 600, window_seconds: 3600}
        shadow: true
  - name: unlimited
    unlimited: true
    endpoints:
      /api/v1/expensive: 5000
whitelist:
  - 127.0.0.1
  - 10.0.0.0/8
  - 2001:db8::/32
  - ip:192.0.2.7
  - key:ops-monitor
  - user:healthchecker
api_keys:
  - id: ops-monitor
    tier: unlimited
    key: ops-monitor-key-0123456789
  - id: acme-prod
    tier: premium
    key_sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
jwt:
  hs256_secret: "0123456789abcdef0123456789abcdef"
  rs256_public_key_pem: |
    -----BEGIN PUBLIC KEY-----
    MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnwMSIBKrufcam+PI68Lj
    LjNi8KrRQLO0RSErNcGDQoC7tewDtdkRYQhuXEnz6H1nxFAz5gxq/iORKyZ2ZCZy
    gILj5P0cPEUlpXm60yY4/XzFUDE/I/JxeV5R6u+h08sec/u8goh+sxm0zzAPs/KZ
    9wzDtEh0+ku52UXRN9iy2VwINwma6Qdd9hLIMi8TZ87D0zilA7NZwjzAA7mwlaCt
    oLekY5O367LNR606xYbs4Bk51HpMrABnwyxrfo7MlM48rrXhs9XY6ty4qQDL5XXw
    haDObkEYeOnMHxEbXIxaaorDm47Vc62RPiuEx5vRHcsymPZS4PZiPvgGOpyyHaVH
    NQIDAQAB
    -----END PUBLIC KEY-----
  user_claim: sub
  tier_claim: tier
  issuer: https://auth.example.com
  audience: rate-limited-api
"#;
