"""Ticket methods (IMP, COLT), the trainer they share, ticket files and transfer."""
