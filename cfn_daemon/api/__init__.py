"""The socket front of cfnd: server (sockets, sessions, drain), router (typed routes and
middleware), handlers (ops by area).
"""
