# docs/deployment.md, "Subscribing".
{
  services.kiss-cache.update = {
    enable = true;
    cacheUrl = "https://cache.example.org";
    marker = "web1";  # default: networking.hostName
    tlsCertificate = "/etc/ssl/reader.pem";
    tlsPrivateKey = "/etc/ssl/reader.key";
    interval = "5m";
  };
}
