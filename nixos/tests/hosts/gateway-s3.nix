# A cache in an S3 bucket behind kiss serve: OIDC for CI, readers' NAR
# downloads redirected to presigned bucket URLs, the pruner on the bucket.
{
  services.kiss.serve = {
    enable = true;
    store = "s3://nix-cache?region=eu-central-1";
    hostName = "cache.example.org";
    listen = [ "0.0.0.0:443" "[::]:443" ];
    sslCertificate = "/var/lib/acme/cache.example.org/cert.pem";
    sslCertificateKey = "/var/lib/acme/cache.example.org/key.pem";
    environmentFile = "/run/secrets/kiss-s3.env";
    redirectReads = "nar";
    oidc = {
      audience = "https://cache.example.org";
      readSubjects = [ "repo:example/*" ];
      writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ];
    };
  };
  services.kiss.prune = {
    enable = true;
    store = "s3://nix-cache?region=eu-central-1";
    environmentFile = "/run/secrets/kiss-s3.env";
    lockWait = "30m";
    grace = "2h";
  };
}
