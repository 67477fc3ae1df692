"""Ticket methods (COLT, IMP, lottery jackpots) as specs, the trainer they share, distillation, ticket and
weight files, and transfer."""
