consul {
  address = "127.0.0.1:8500"
}

wait {
  min = "2s"
  max = "10s"
}

template {
  source      = "app.ctmpl"
  destination = "rendered/app.conf"
  perms       = "0640"
}
