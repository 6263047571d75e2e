"""model/train"""
