"""What the kernel says of sockets: rows from /proc/PID/net and NETLINK_SOCK_DIAG, one interface over both
(`tables.SocketTables`, which picks the cheaper exact reader) and the per-listener figures made from them."""
